"""A fake OpenAI-compatible engine with a context window, the standard library only (bench/context.py drives it).

It shares no code with the gateway or tests/mock_lmstudio. Models `fake-2k`, `fake-4k` and `fake-8k` hold 2,048,
4,096 and 8,192 tokens, listed as llama.cpp lists them (`owned_by: "llamacpp"`, `meta.n_ctx`).

- **Counting**: a request's prompt is its tools' JSON followed by its messages' JSON (the tools first, as chat
  templates render them in the system prompt), ceil(characters / 4) tokens.
- **Refusing**: a prompt whose tokens plus its `max_tokens` are over the window gets llama.cpp's own 400
  (`exceed_context_size_error`, "request (N tokens) exceeds the available context size (M tokens)"): stricter
  than llama.cpp, which refuses only the prompt over the window.
- **Prompt cache**: two slots, like llama-server's; a request takes the slot whose cached prompt shares the most
  characters with it, and `timings` says how many tokens were read (`prompt_n`) and taken from the cache
  (`cache_n`), as llama-server's answers do.
- **The model** reads the task (the first user message) and the conversation so far:
  `time`: one call to the offered tool whose name ends in `get_current_time`, then the answer;
  `file <path>`: a call to `..._read_text_file` with that path, then, when the output was cut and
  `bridge__read_output` is offered, one read of 2,000 characters from offset 1,000, then the answer;
  `rounds <n>`: n calls to `..._get_current_time` (a different timezone each), then the answer.
  A tool it wants that is not offered is searched for with `bridge__find_tools` when that is offered.
- ``GET /_requests``: every chat request's body, count, window, status and timings; ``POST /_requests/reset``.

Run: ``python -m bench.window_engine --port N [--host 127.0.0.1]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WINDOWS = {"fake-2k": 2048, "fake-4k": 4096, "fake-8k": 8192}
SLOTS = 2
ZONES = ["Europe/Paris", "Asia/Tokyo", "America/New_York", "Europe/London", "Australia/Sydney", "Africa/Cairo"]
ZONES += ["America/Lima", "Asia/Kolkata", "Europe/Moscow", "Europe/Berlin", "Asia/Seoul", "America/Chicago"]

_ids = itertools.count(1)
_lock = threading.Lock()
_requests: list[dict[str, Any]] = []
_slots: list[str] = [""] * SLOTS


def prompt_text(body: dict[str, Any]) -> str:
    tools = json.dumps(body.get("tools") or [], separators=(",", ":"))
    return tools + json.dumps(body.get("messages") or [], separators=(",", ":"))


def tokens(chars: int) -> int:
    return math.ceil(chars / 4)


def take_slot(text: str) -> tuple[int, int]:
    """(characters taken from the cache, characters read), the slot then holding `text`."""
    with _lock:
        shared = [_common(text, cached) for cached in _slots]
        best = max(range(SLOTS), key=lambda i: (shared[i], -i))
        if shared[best] == 0:  # nothing shared: the least recently used slot (here simply the other one)
            best = _slots.index(min(_slots, key=len))
        _slots[best] = text
        return shared[best], len(text) - shared[best]


def _common(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


Answer = tuple[str | None, list[dict[str, Any]]]  # the model's text, its tool calls


class Conversation:
    """What the model reads in a request: the task, the tools offered, the calls made and their results."""

    def __init__(self, body: dict[str, Any]) -> None:
        messages = body.get("messages") or []
        self.task = next((str(m.get("content")) for m in messages if m.get("role") == "user"), "")
        self.offered = [t["function"]["name"] for t in body.get("tools") or []]
        self.results = {m.get("tool_call_id"): str(m.get("content")) for m in messages if m.get("role") == "tool"}
        self.calls = [c for m in messages if m.get("role") == "assistant" for c in m.get("tool_calls") or []]

    def made(self, suffix: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["function"]["name"].endswith(suffix)]

    def call(self, suffix: str, arguments: dict[str, Any], query: str) -> Answer:
        """A call to the offered tool named `...suffix`; a search for it when it is not offered."""
        name = next((n for n in self.offered if n.endswith(suffix)), None)
        if name is not None:
            return None, [_call(name, arguments)]
        if "bridge__find_tools" in self.offered and not self.made("bridge__find_tools"):
            return None, [_call("bridge__find_tools", {"query": query})]
        return f"I could not find a tool to {query}.", []


def decide(body: dict[str, Any]) -> Answer:
    """The model's answer to a request (see the module docstring)."""
    seen = Conversation(body)
    if not seen.offered:
        return f"Done after {len(seen.results)} tool results.", []
    if seen.task.startswith("time"):
        if seen.made("get_current_time"):
            return "It is the time the tool said.", []
        return seen.call("get_current_time", {"timezone": "UTC"}, "get the current time in a timezone")
    if seen.task.startswith("file"):
        return read_file(seen)
    if seen.task.startswith("rounds"):
        wanted, done = int(re.findall(r"\d+", seen.task)[0]), len(seen.made("get_current_time"))
        if done >= wanted:
            return f"Asked the clock {done} times.", []
        return seen.call("get_current_time", {"timezone": ZONES[done % len(ZONES)]}, "get the current time")
    return "I do not know that task.", []


def read_file(seen: Conversation) -> Answer:
    """Read the file named in the task; read more of it once when the output was cut; then answer."""
    reads = seen.made("read_text_file")
    if not reads:
        path = re.search(r"file (\S+)", seen.task)
        return seen.call("read_text_file", {"path": path.group(1) if path else ""}, "read a text file")
    cut = "cut by lmstudio-bridge" in seen.results.get(reads[-1]["id"], "")
    if cut and not seen.made("bridge__read_output") and "bridge__read_output" in seen.offered:
        return None, [_call("bridge__read_output", {"tool_call_id": reads[-1]["id"], "offset": 1000, "length": 2000})]
    return "The file was read.", []


def _call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    function = {"name": name, "arguments": json.dumps(arguments)}
    return {"id": f"call_{next(_ids)}", "type": "function", "function": function}


def chat(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    model = str(body.get("model") or "fake-4k")
    window = WINDOWS.get(model, 4096)
    text = prompt_text(body)
    prompt = tokens(len(text))
    max_tokens = int(body.get("max_tokens") or 0)
    record: dict[str, Any] = {"model": model, "window": window, "prompt_tokens": prompt, "max_tokens": max_tokens}
    record["body"] = body
    if prompt + max_tokens > window:
        record.update(status=400, prompt_n=0, cache_n=0)
        with _lock:
            _requests.append(record)
        refusal = f"request ({prompt} tokens) exceeds the available context size ({window} tokens), try increasing it"
        error = {"code": 400, "message": refusal, "type": "exceed_context_size_error"}
        return 400, {"error": {**error, "n_prompt_tokens": prompt, "n_ctx": window}}
    cached_chars, _ = take_slot(text)
    cache_n = cached_chars // 4
    prompt_n = prompt - cache_n
    record.update(status=200, prompt_n=prompt_n, cache_n=cache_n)
    with _lock:
        _requests.append(record)
    content, calls = decide(body)
    completion = 20 if calls else 8
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    answer = {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        "timings": {"prompt_n": prompt_n, "cache_n": cache_n, "predicted_n": completion},
    }
    return 200, answer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "window-engine/1"

    def log_message(self, format: str, *args: Any) -> None:  # no access log
        pass

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            data = [
                {"id": name, "object": "model", "owned_by": "llamacpp", "meta": {"n_ctx": n, "n_ctx_train": 8192}}
                for name, n in WINDOWS.items()
            ]
            self._send(200, {"object": "list", "data": data})
        elif self.path == "/_requests":
            with _lock:
                self._send(200, list(_requests))
        else:
            self._send(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path == "/_requests/reset":
            with _lock:
                _requests.clear()
                _slots[:] = [""] * SLOTS
            self._send(200, {})
        elif self.path == "/v1/chat/completions":
            self._send(*chat(json.loads(raw)))
        else:
            self._send(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})


class Server(ThreadingHTTPServer):
    daemon_threads = True


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.window_engine", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with Server((args.host, args.port), Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
