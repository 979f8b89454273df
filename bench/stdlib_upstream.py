"""A second fake LM Studio that shares no code with tests/mock_lmstudio: the standard library only.

`http.server.ThreadingHTTPServer` (a thread per connection, HTTP/1.1 keep-alive, TCP_NODELAY on every
accepted socket), JSON by hand. It knows one model and one conversation:

- ``GET /v1/models``: OpenAI's list, one model (no LM Studio REST API: ``/api/v0`` and ``/api/v1`` are 404,
  like an OpenAI-compatible server that is not LM Studio).
- ``POST /v1/chat/completions`` (JSON only, no streaming): while the conversation has no ``role: tool``
  message and tools are offered, one call to ``time__get_current_time`` with ``{"timezone": "UTC"}``;
  after a tool message, the final text ``"The time tool says: <tool message contents>"``. Both with
  ``usage`` (tokens counted as whitespace-separated words, which is all a benchmark needs).
- ``GET /_stats``: how many requests each path had (``{"GET /v1/models": 3, ...}``); ``POST /_stats/reset``.

Run: ``python -m bench.stdlib_upstream --port N [--host 127.0.0.1]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "stdlib/fake-llm"
TOOL = "time__get_current_time"
ARGUMENTS = {"timezone": "UTC"}
ANSWER_PREFIX = "The time tool says: "

_ids = itertools.count(1)
_stats: Counter[str] = Counter()
_stats_lock = threading.Lock()


def _words(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content") or "").split()) for m in messages)


def chat_completion(body: dict[str, Any]) -> dict[str, Any]:
    """The answer to one chat request (see the module docstring)."""
    messages = body.get("messages") or []
    tool_outputs = [str(m.get("content") or "") for m in messages if m.get("role") == "tool"]
    n = next(_ids)
    if tool_outputs or not body.get("tools"):
        content = ANSWER_PREFIX + "\n".join(tool_outputs)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        finish, completion = "stop", len(content.split())
    else:
        call = {"id": f"call_{n}", "type": "function", "function": {"name": TOOL, "arguments": json.dumps(ARGUMENTS)}}
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish, completion = "tool_calls", 12
    prompt = _words(messages)
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or MODEL,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        "system_fingerprint": MODEL,
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # TCP_NODELAY on the accepted socket (socketserver.StreamRequestHandler)
    server_version = "stdlib-upstream/1"

    def log_message(self, format: str, *args: Any) -> None:  # no access log
        pass

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        head = (
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.wfile.write(head + body)  # one write: one segment for a small answer

    def _count(self) -> None:
        with _stats_lock:
            _stats[f"{self.command} {self.path}"] += 1

    def do_GET(self) -> None:
        if self.path == "/_stats":
            with _stats_lock:
                self._send(200, dict(_stats))
            return
        self._count()
        if self.path == "/v1/models":
            model = {"id": MODEL, "object": "model", "owned_by": "organization_owner"}
            self._send(200, {"object": "list", "data": [model]})
        else:
            self._send(404, {"error": f"Unexpected endpoint or method. (GET {self.path})"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path == "/_stats/reset":
            with _stats_lock:
                _stats.clear()
            self._send(200, {})
            return
        self._count()
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": f"Unexpected endpoint or method. (POST {self.path})"})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send(400, {"error": "body is not JSON"})
            return
        if body.get("stream"):
            self._send(400, {"error": "this fake upstream does not stream"})
            return
        self._send(200, chat_completion(body))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stdlib_upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with Server((args.host, args.port), Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
