"""A mock LM Studio: a real HTTP server (Starlette + uvicorn) for tests and benchmarks.

Run it with ``python -m tests.mock_lmstudio --port N [--host 127.0.0.1] [--api v1|v0|openai]
[--models FILE.json] [--pin-loaded-model]``, or from tests with :mod:`tests.mock_lmstudio.fixture`.

Endpoints
---------
- ``GET /v1/models`` (OpenAI list, entries carry no ``created``), ``GET /api/v0/models`` (``--api`` v0/v1),
  ``GET /api/v1/models`` and ``POST /api/v1/models/load|unload`` (``--api v1``, the default).
- ``POST /v1/chat/completions`` (JSON or ``"stream": true`` SSE), ``/v1/completions``, ``/v1/embeddings``.
- Anything else answers **200** ``{"error": "Unexpected endpoint or method. (GET /path)"}`` like LM Studio.
- ``--pin-loaded-model``: chat answers come from the first loaded LLM whatever ``model`` says.
- ``--models FILE.json``: a list of ``{"id", "type": "llm"|"vlm"|"embeddings", "loaded", "max_context_length",
  "tool_use"}`` replacing the default list (embedding model first, then ``qwen/qwen3-4b`` loaded, ...).
  Chat does not JIT-load a model: states change only through load/unload, the ``unload`` fault and reset.

The scripted model (stateless, per conversation)
------------------------------------------------
The LAST ``[[mock <JSON object>]]`` found in any user/system message (or a completion ``prompt``) drives
the answer. Keys, all optional:

- ``"calls": [[{"name": "t", "arguments": {...} | "raw string"}, ...], [...round 2...]]``: rounds of tool
  calls; the round used is the number of assistant messages with ``tool_calls`` already in the conversation.
  Object arguments are sent as a JSON string, string arguments verbatim (malformed JSON on purpose).
- ``"forever": {"name": "t", "arguments": {...}}``: call this tool in every answer (when tools are offered).
- ``"answer": "text"``: final text instead of ``"Mock answer to: <last user message>"``.
- ``"delay_ms": N``: sleep N ms before answering each request of the conversation.
- ``"fault": {...}``: a fault object (below) applied to each request of the conversation.

Tool calls are emitted only when the request offers ``tools`` (an unoffered name in a round is still
emitted). Ids are ``call_<round>_<i>``. Without a (further) round the final answer is
``"Based on the tools: " + "\\n".join(tool message contents)`` when the conversation has ``role: tool``
messages, else the ``answer`` text or ``"Mock answer to: <last user message>"`` (script markup removed).

Injected faults (control API)
-----------------------------
``POST /_mock/faults {"faults": [...]}`` appends to a FIFO queue; each non-``/_mock`` request pops the first
fault whose optional ``"path"`` equals its path. ``DELETE /_mock/faults`` clears the queue. Fault kinds:

- ``{"kind": "status", "status": 503, "retry_after": 2, "body": {...}}``: that status (+ Retry-After).
- ``{"kind": "delay", "ms": N}``: sleep, then answer normally.  ``{"kind": "hang"}``: never answer.
- ``{"kind": "malformed_json"}``: 200 ``application/json`` whose body is not JSON.
- ``{"kind": "malformed_tool_args"}``: tool call arguments become ``{"path": `` (first offered tool if no call).
- ``{"kind": "cut_stream"}``: send part of the answer (one or two SSE chunks) and drop the connection.
- ``{"kind": "unknown_model"}``: 404 model_not_found.  ``{"kind": "unload"}``: unload the model, then 404.

``GET /_mock/requests`` -> ``{"requests": [{"id", "method", "path", "body", "aborted", "status", "started",
"ended"}]}`` (last 10,000, ``aborted`` = client went away first); ``POST /_mock/reset`` clears faults, log
and model states; ``GET /_mock/health`` -> ``{"ok": true}``.
"""
