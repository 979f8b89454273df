"""A mock LM Studio: a real HTTP server (Starlette + uvicorn) for tests and benchmarks.

Run it with ``python -m tests.mock_lmstudio --port N [--host 127.0.0.1] [--api v1|v0|openai|llamacpp]
[--lmstudio current|0.4|0.3] [--models FILE.json] [--pin-loaded-model] [--no-jit] [--jit-load-ms N]
[--no-auto-evict] [--separate-reasoning]``, or from tests with :mod:`tests.mock_lmstudio.fixture`.

It follows CURRENT LM Studio (each quirk cites its source in server.py); ``--lmstudio 0.3`` keeps the older
shapes where they differ (see "Versions"). LM Studio's error answers are sent as recorded, with their sources, in
tests/data/lmstudio_bodies.json (the tests read the same file).

Endpoints
---------
- ``GET /v1/models`` (OpenAI list, entries carry no ``created``; with JIT off only loaded models),
  ``GET /api/v0/models`` (``--api`` v0/v1), ``GET /api/v1/models`` and ``POST /api/v1/models/load|unload``
  (``--api v1``, the default). ``loaded_instances[].id`` is an INSTANCE id: the key, or ``instance_id`` from
  the model file, and ``<key>:2``, ``<key>:3``... for further instances (a load of a loaded model adds one).
  Unload takes ``{"instance_id"}`` only: a key that is no instance's id is 404 not found.
- ``POST /v1/chat/completions`` (JSON or ``"stream": true`` SSE), ``/v1/completions``, ``/v1/embeddings``.
- Anything else answers **200** ``{"error": "Unexpected endpoint or method. (GET /path)"}`` like LM Studio.
- ``--api llamacpp``: llama.cpp's llama-server instead: ``GET /v1/models`` in its shape (``owned_by:
  "llamacpp"``, ``meta.n_ctx`` / ``meta.n_ctx_train``; with several models each entry has ``status.value``),
  ``GET /props`` (``default_generation_settings.n_ctx`` of the first loaded LLM); unknown paths are 404.
- ``--models FILE.json``: a list of ``{"id", "type": "llm"|"vlm"|"embeddings", "loaded", "max_context_length",
  "tool_use", "instance_id"?, "context_length"?, "listed_context"?, "overflow"?}`` replacing the default list
  (embedding model first, then ``qwen/qwen3-4b`` loaded, ...).

Context window (issue 28)
-------------------------
- A prompt is counted as ceil(characters / 4) of ``json.dumps(messages)`` plus ``json.dumps(tools)`` (when the
  request has tools); ``usage.prompt_tokens`` is that count.
- ``context_length`` (default none: no limit): the tokens the model holds. A chat request whose prompt is that
  many or more gets the model's ``overflow`` answer; an answer is cut where the window ends (``finish_reason:
  "length"``). ``listed_context``: what the listings say it holds (default: ``context_length``, else 4096), so a
  model can hold less than it lists. Listings: ``/api/v1/models`` ``loaded_instances[].config.context_length``,
  ``/api/v0/models`` ``loaded_context_length`` (loaded models only), llama.cpp's ``meta.n_ctx`` and ``/props``.
- ``overflow``: ``n_keep_400`` (LM Studio's 400, the default), ``n_keep_200`` (the same body with 200, LM Studio
  0.4.21), ``empty_200`` (a 200 with empty content and 0 completion tokens, LM Studio's GGUF path; streamed: no
  content chunks), ``llama_400`` (llama.cpp's ``exceed_context_size_error``, the default with ``--api
  llamacpp``). The bodies are the recorded ones of ``tests/data/context_overflow.json``, with the request's
  numbers.

Model loading (JIT)
-------------------
- JIT on (default): a request naming a model that is not loaded loads it (after ``--jit-load-ms``), and
  Auto-Evict (on unless ``--no-auto-evict``) first unloads the models earlier JIT loads brought in (models
  loaded through ``/api/v1/models/load`` or loaded from the start stay).
- ``--no-jit``: such a request gets 400 ``{"error": "No models loaded. Please load a model ..."}`` (a plain
  string) when no model is loaded at all, else the unknown-model answer; ``/v1/models`` lists loaded models only.
- A request without ``model`` uses the first loaded model of the right kind (or gets "No models loaded").
- ``--pin-loaded-model``: chat answers come from the first loaded LLM whatever ``model`` says (no JIT load).

Versions (``--lmstudio``)
-------------------------
- unknown model: current (default; ``0.4`` is the same) **400** ``{"error": {"message": "Invalid model
  identifier \"x\". Please specify a valid downloaded model (e.g., a, b, c).", "type": "invalid_request_error",
  "param": "model", "code": "model_not_found"}}``; ``0.3``: **404**, message ``"Model \"x\" not found. Please
  specify a valid model.\n\nYour models:\n<one id a line>"`` (same ``type``, ``param``, ``code``).
- load answer: current ``{"type", "instance_id", "load_time_seconds", "status": "loaded"}``; ``0.3`` the
  other documented name, ``{"type", "model_instance_id", "load_time_seconds", "status": "loaded"}``.

The scripted model (stateless, per conversation)
------------------------------------------------
The LAST ``[[mock <JSON object>]]`` found in any user/system message (or a completion ``prompt``) drives
the answer. Keys, all optional:

- ``"calls": [[{"name": "t", "arguments": {...} | "raw string"}, ...], [...round 2...]]``: rounds of tool
  calls; the round used is the number of assistant messages with ``tool_calls`` already in the conversation.
  Object arguments are sent as a JSON string, string arguments verbatim (malformed JSON on purpose).
- ``"required_calls": [[...], ...]``: rounds of calls (as ``calls``) made only when the request says
  ``"tool_choice": "required"`` and ``calls`` has no such round (an engine's grammar forcing a call).
- ``"forever": {"name": "t", "arguments": {...}}``: call this tool in every answer (when tools are offered).
- ``"say": "text"``: the ``content`` of an answer that calls tools (else ``null``): text AND ``tool_calls``.
- ``"reasoning": "text"``: the model reasons; with ``--separate-reasoning`` it comes in
  ``message.reasoning_content`` (streamed: ``delta.reasoning_content`` chunks before the content), without it
  at the start of ``content`` as ``<think>text</think>\\n``.
- ``"answer": "text"``: final text instead of ``"Mock answer to: <last user message>"``.
- ``"delay_ms": N``: sleep N ms before answering each request of the conversation.
- ``"hold": "gate"``: wait before answering until ``POST /_mock/release {"gate": "gate"}`` (a test's "the
  request is in flight" without a timing guess); ``GET /_mock/held`` -> ``{"held": {"gate": n}}`` counts the
  requests waiting now. A released gate stays open until reset; reset releases every gate.
- ``"fault": {...}``: a fault object (below) applied to each request of the conversation.

``max_tokens`` is honoured: an answer longer than it (at 4 characters a token) is cut there, with no tool
calls and ``finish_reason: "length"``.

Tool calls are emitted only when the request offers ``tools`` (an unoffered name in a round is still
emitted). Ids are ``call_<round>_<i>``. Without a (further) round the final answer is
``"Based on the tools: " + "\\n".join(tool message contents)`` when the conversation has ``role: tool``
messages, else the ``answer`` text or ``"Mock answer to: <last user message>"`` (script markup removed).

Injected faults and control API
-------------------------------
``POST /_mock/faults {"faults": [...]}`` appends to a FIFO queue; each non-``/_mock`` request pops the first
fault whose optional ``"path"`` equals its path. ``DELETE /_mock/faults`` clears the queue. Fault kinds:

- ``{"kind": "status", "status": 503, "retry_after": 2, "body": {...}}``: that status (+ Retry-After).
- ``{"kind": "delay", "ms": N}``: sleep, then answer normally.  ``{"kind": "hang"}``: never answer.
- ``{"kind": "malformed_json"}``: 200 ``application/json`` whose body is not JSON.
- ``{"kind": "malformed_tool_args"}``: tool call arguments become ``{"path": `` (first offered tool if no call).
- ``{"kind": "cut_stream"}``: send part of the answer (one or two SSE chunks) and drop the connection.
- ``{"kind": "unknown_model"}``: the unknown-model answer of the version (400 now, 404 in 0.3 mode).
  ``{"kind": "unload"}``: unload the model, then the unknown-model answer.

``POST /_mock/config {"lmstudio", "jit", "jit_load_ms", "auto_evict", "separate_reasoning",
"pin_loaded_model", "models": [...]}`` changes options (any subset; ``models`` in the ``--models`` format)
until the next reset; ``GET /_mock/config`` shows them. ``GET /_mock/requests`` -> ``{"requests": [{"id",
"method", "path", "headers", "body", "aborted", "status", "started", "ended"}]}`` (last 10,000; ``headers``
with lower-case names; ``aborted`` = client went away first); ``POST /_mock/reset`` clears faults and log
and restores the model list, states and options; ``GET /_mock/health`` -> ``{"ok": true}``.
"""
