"""A recording reverse proxy in front of the real engine: the gateway talks to it as to LM Studio, and a test
reads exactly what the engine was asked and what it answered.

Only whole (non-streamed) answers are relayed; the agent loop's calls are such. A streamed request would be
buffered, so tests that watch streaming or disconnects talk to the engine without it.

`rewrite` (optional) changes each chat completion's body before it is forwarded; the exchange records the body
as the engine got it. `answer` (optional) changes each answered chat completion before it is relayed to the
gateway; the exchange records the answer as relayed (the engine's `timings` stay as they were).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.types import Receive, Scope, Send

from tests.processes import serve_in_loop

HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})
# SmolLM2-135M never starts a call by itself: an assistant prefill (continued by the engine) starts it inside one
PREFILL = {"role": "assistant", "content": "<tool_call>\n"}
# tokens of the chat template around a message that a request may re-process beyond what it added (measured: the
# call the model generated is rendered again by the template; the two share a prefix, then differ in spacing)
TEMPLATE_SLACK = 8


def force_a_call(body: dict[str, Any]) -> dict[str, Any]:
    """A request that offers tools, made to call exactly one: `tool_choice: required` (this llama.cpp's grammar
    still lets text come first, and this model then writes text until max_tokens), the assistant prefill
    `<tool_call>` (the model starts inside a call), `parallel_tool_calls: false` and the stop string
    `</tool_call>` (one call per answer: otherwise it repeats the call until max_tokens). The prompt, the tools
    and the window stay the gateway's; only the choice to call is forced. Requests without tools pass as they are.
    """
    if not body.get("tools"):
        return body
    return {
        **body,
        "messages": [*body["messages"], PREFILL],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "stop": ["</tool_call>"],
    }


def whole_reads(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer whose file-reading calls ask for the whole file: `head` and `tail` dropped from the arguments of
    `read_text_file` / `read_file` calls. Which part the model asks for varies between machines (SmolLM2-135M
    asked `head: 1000000` on one and `head: 10` on another), and a test of a large output needs the whole file.
    The call stays the model's otherwise."""
    for choice in answer.get("choices") or []:
        for call in choice.get("message", {}).get("tool_calls") or []:
            function = call.get("function") or {}
            if function.get("name", "").endswith(("read_text_file", "read_file")):
                arguments = json.loads(function.get("arguments") or "{}")
                function["arguments"] = json.dumps({k: v for k, v in arguments.items() if k not in ("head", "tail")})
    return answer


@dataclass
class Exchange:
    """One `POST /v1/chat/completions` the engine got (`request`, as JSON) and its answer."""

    request: dict[str, Any]
    status: int
    response: dict[str, Any]


@dataclass
class Recorder:
    """An ASGI app that forwards every request to `upstream` and keeps the chat completions it saw."""

    upstream: str
    rewrite: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    answer: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    exchanges: list[Exchange] = field(default_factory=list)
    _client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.upstream, timeout=300)
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k.decode().lower() not in HOP_HEADERS}
        is_chat = scope["method"] == "POST" and scope["path"] == "/v1/chat/completions"
        if is_chat and self.rewrite is not None:
            body = json.dumps(self.rewrite(json.loads(body))).encode()
        upstream = await self._client.request(
            scope["method"], scope["path"], params=scope["query_string"].decode(), content=body, headers=headers
        )
        content = upstream.content
        if is_chat:
            answer = upstream.json()
            if self.answer is not None and upstream.status_code == 200:
                answer = self.answer(answer)
                content = json.dumps(answer).encode()
            self.exchanges.append(Exchange(json.loads(body), upstream.status_code, answer))
        await send(
            {
                "type": "http.response.start",
                "status": upstream.status_code,
                "headers": [
                    (k.encode(), v.encode()) for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


@contextlib.asynccontextmanager
async def recording_proxy(
    upstream: str, rewrite: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> AsyncIterator[tuple[str, Recorder]]:
    """(base URL, recorder) of a proxy to `upstream` on a free 127.0.0.1 port, served in this event loop."""
    recorder = Recorder(upstream, rewrite)
    try:
        async with serve_in_loop(recorder, "the recording proxy", 30) as url:
            yield url, recorder
    finally:
        await recorder.aclose()


# --- the engine's prompt cache, from its own counters --------------------------------------------------


@dataclass(frozen=True)
class Reuse:
    """What one request cost the engine's prompt processing (llama-server's `timings` of the answer).

    `kind`: `first`; `continued` (its messages start with exactly the previous request's messages, and the same
    tools); `compacted` (earlier messages changed: the gateway compacted the history); `tools` (the tools offered
    changed: the template renders them at the top of the prompt, so the whole prompt is read again)."""

    index: int
    kind: str
    prompt_tokens: int  # the engine's count of the whole prompt
    added: int  # prompt_tokens minus the previous request's
    processed: int  # timings.prompt_n: tokens the engine read
    cached: int  # timings.cache_n: tokens it took from its cache

    @property
    def only_new(self) -> bool:
        """The engine took the previous prompt from its cache and read only what was added (give or take the
        template's few tokens)."""
        previous = self.prompt_tokens - self.added
        return self.cached >= previous - TEMPLATE_SLACK and self.processed <= self.added + TEMPLATE_SLACK


def sent_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages as the gateway sent them (without the prefill `force_a_call` added)."""
    messages = list(request["messages"])
    return messages[:-1] if messages and messages[-1] == PREFILL else messages


def prompt_reuse(exchanges: list[Exchange]) -> list[Reuse]:
    """Each answered request's prompt processing, classified against the request before it."""
    reuse: list[Reuse] = []
    previous: Exchange | None = None
    for index, exchange in enumerate(exchanges):
        timings = exchange.response.get("timings") or {}
        prompt_tokens = int(exchange.response.get("usage", {}).get("prompt_tokens", 0))
        if previous is None:
            kind, added = "first", prompt_tokens
        else:
            before, now = sent_messages(previous.request), sent_messages(exchange.request)
            added = prompt_tokens - int(previous.response.get("usage", {}).get("prompt_tokens", 0))
            if now[: len(before)] != before:
                kind = "compacted"
            elif (previous.request.get("tools") or []) != (exchange.request.get("tools") or []):
                kind = "tools"
            else:
                kind = "continued"
        reuse.append(
            Reuse(index, kind, prompt_tokens, added, int(timings.get("prompt_n", -1)), int(timings.get("cache_n", -1)))
        )
        previous = exchange
    return reuse
