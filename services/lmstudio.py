"""LM Studio client: model listing (three API generations), chat (JSON and streamed), error mapping.

One pooled `httpx.AsyncClient` is shared by every call. Failures are mapped to the `LLMError`
family; those that may pass (connect errors, 429, 502, 503, 504) are marked `retryable` and
retried by `call_with_retries`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar

import httpx
from httpx_aiohttp import AiohttpTransport
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from services.breaker import Breaker
from services.errors import (
    BridgeError,
    LLMConnectionError,
    LLMError,
    LLMRateLimitError,
    LLMResponseError,
    LLMTimeoutError,
    LLMValidationError,
    ModelNotFoundError,
    NotSupportedError,
)
from services.metrics import Metrics
from services.retry import RetryPolicy, call_with_retries
from services.tracing import tracer

T = TypeVar("T")

ModelType = Literal["llm", "vlm", "embedding"]
JSON_HEADERS = {"Content-Type": "application/json"}
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
UNKNOWN_ENDPOINT = "Unexpected endpoint or method"  # LM Studio's 200 answer to a path it does not have


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model, normalised from whichever model-list API the server has."""

    id: str
    type: ModelType
    loaded: bool
    max_context_length: int | None = None
    tool_use: bool = False

    @property
    def can_chat(self) -> bool:
        return self.type != "embedding"


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens

    @classmethod
    def from_json(cls, data: Any) -> Usage:
        if not isinstance(data, dict):
            return cls()
        prompt, completion = int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0)
        return cls(prompt, completion, int(data.get("total_tokens") or prompt + completion))


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # the raw JSON string the model produced (may be malformed)


@dataclass(slots=True)
class ChatResult:
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    model: str = ""
    usage: Usage = field(default_factory=Usage)


# --- model lists ---------------------------------------------------------------------------


def _parse_api_v1(body: Any) -> list[ModelInfo] | None:
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, list):
        return None
    out = []
    for m in models:
        caps = m.get("capabilities") or {}
        kind: ModelType = "embedding" if m.get("type") == "embedding" else "llm"
        if kind == "llm" and caps.get("vision"):
            kind = "vlm"
        out.append(
            ModelInfo(
                id=str(m["key"]),
                type=kind,
                loaded=bool(m.get("loaded_instances")),
                max_context_length=m.get("max_context_length"),
                tool_use=bool(caps.get("trained_for_tool_use")),
            )
        )
    return out


def _parse_api_v0(body: Any) -> list[ModelInfo] | None:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or (data and "state" not in data[0]):
        return None
    kinds: dict[str, ModelType] = {"embeddings": "embedding", "embedding": "embedding", "vlm": "vlm"}
    return [
        ModelInfo(
            id=str(m["id"]),
            type=kinds.get(str(m.get("type")), "llm"),
            loaded=m.get("state") == "loaded",
            max_context_length=m.get("max_context_length"),
            tool_use="tool_use" in (m.get("capabilities") or []),
        )
        for m in data
    ]


def _parse_openai(body: Any) -> list[ModelInfo] | None:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    return [
        ModelInfo(id=str(m["id"]), type="embedding" if "embed" in str(m["id"]).lower() else "llm", loaded=False)
        for m in data
    ]


MODEL_APIS: tuple[tuple[str, str, Callable[[Any], list[ModelInfo] | None]], ...] = (
    ("api-v1", "/api/v1/models", _parse_api_v1),
    ("api-v0", "/api/v0/models", _parse_api_v0),
    ("openai", "/v1/models", _parse_openai),
)


# --- error mapping ---------------------------------------------------------------------------


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _error_message(body: Any) -> str:
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err if err is not None else body)


def _models_from_message(message: str) -> list[str]:
    _, _, listing = message.partition("Your models:")
    return [line.strip().lstrip("-• ").strip() for line in listing.splitlines() if line.strip()]


def error_for_response(response: httpx.Response, model: str | None = None) -> LLMError | None:
    """The domain error an LM Studio response stands for, or None when it is a success."""
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if status < 400:
        if body is None:
            return LLMResponseError(f"LM Studio answered {status} with a body that is not JSON")
        if isinstance(body, dict) and "error" in body and "choices" not in body and "data" not in body:
            message = _error_message(body)
            if message.startswith(UNKNOWN_ENDPOINT):
                return NotSupportedError(f"This LM Studio does not support it: {message}")
            return LLMResponseError(f"LM Studio answered with an error: {message}")
        return None
    message = _error_message(body) if body is not None else response.text[:500]
    err: LLMError
    code = body.get("error", {}).get("code") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
    if status == 404 and (code == "model_not_found" or "not found" in message.lower()) and model:
        return ModelNotFoundError(model, _models_from_message(message))
    if status == 429:
        err = LLMRateLimitError(f"LM Studio is rate limiting: {message}", retry_after=_retry_after(response))
    elif status >= 500:
        err = LLMResponseError(f"LM Studio answered {status}: {message}", retry_after=_retry_after(response))
    else:
        err = LLMValidationError(f"LM Studio rejected the request ({status}): {message}", upstream_status=status)
    err.retryable = status in RETRYABLE_STATUS
    return err


def error_for_exception(exc: httpx.HTTPError) -> LLMError:
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
        err: LLMError = LLMConnectionError(f"LM Studio is not reachable: {exc.__class__.__name__}: {exc}")
        err.retryable = True
        return err
    if isinstance(exc, httpx.TimeoutException):
        return LLMTimeoutError(f"LM Studio did not answer in time ({exc.__class__.__name__})")
    if isinstance(exc, httpx.RemoteProtocolError) and "without sending a response" in str(exc):
        # a kept-alive connection closed by the server as the request went out: safe to send again
        err = LLMConnectionError(f"LM Studio closed the connection before answering: {exc}")
        err.retryable = True
        return err
    return LLMResponseError(f"LM Studio connection failed: {exc.__class__.__name__}: {exc}")


def counts_against_lmstudio(exc: BaseException) -> bool:
    """Failures that say LM Studio is down or broken (not a bad request, a missing model or a 429)."""
    return isinstance(exc, LLMConnectionError | LLMTimeoutError | LLMResponseError)


# --- streaming -------------------------------------------------------------------------------


class ChatAssembler:
    """Folds `chat.completion.chunk`s into the same `ChatResult` a non-streamed answer gives."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.finish_reason: str | None = None
        self.model = ""
        self.usage = Usage()

    def add(self, chunk: dict[str, Any]) -> None:
        self.model = chunk.get("model") or self.model
        if chunk.get("usage"):
            self.usage = Usage.from_json(chunk["usage"])
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.content.append(delta["content"])
            for piece in delta.get("tool_calls") or []:
                call = self.calls.setdefault(int(piece.get("index", 0)), {"id": "", "name": "", "arguments": ""})
                call["id"] = piece.get("id") or call["id"]
                fn = piece.get("function") or {}
                call["name"] += fn.get("name") or ""
                call["arguments"] += fn.get("arguments") or ""
            self.finish_reason = choice.get("finish_reason") or self.finish_reason

    def result(self) -> ChatResult:
        calls = [ToolCall(c["id"], c["name"], c["arguments"]) for _, c in sorted(self.calls.items())]
        return ChatResult("".join(self.content) or None, calls, self.finish_reason, self.model, self.usage)


def parse_chat(body: dict[str, Any]) -> ChatResult:
    try:
        choice = body["choices"][0]
        message = choice.get("message") or {}
        calls = [
            ToolCall(str(c.get("id") or f"call_{i}"), c["function"]["name"], c["function"].get("arguments") or "")
            for i, c in enumerate(message.get("tool_calls") or [])
        ]
    except (KeyError, IndexError, TypeError) as exc:
        raise LLMResponseError(f"LM Studio answer is not a chat completion: missing {exc}") from exc
    for call in calls:  # some servers send arguments as an object, not a JSON string
        if not isinstance(call.arguments, str):
            call.arguments = json.dumps(call.arguments)
    return ChatResult(
        message.get("content"),
        calls,
        choice.get("finish_reason"),
        str(body.get("model") or ""),
        Usage.from_json(body.get("usage")),
    )


# --- telemetry ---------------------------------------------------------------------------


def _operation(path: str) -> str:
    """The GenAI operation name of an OpenAI-style path."""
    return {
        "/v1/chat/completions": "chat",
        "/v1/completions": "text_completion",
        "/v1/embeddings": "embeddings",
        "/v1/responses": "responses",
    }.get(path, "request")


@contextlib.contextmanager
def gen_ai_span(operation: str, model: Any, *, stream: bool = False) -> Iterator[Span]:
    """A client span following the OpenTelemetry GenAI conventions."""
    name = f"{operation} {model}" if model else operation
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": "lmstudio",
        "gen_ai.system": "lmstudio",
    }
    if model:
        attributes["gen_ai.request.model"] = str(model)
    if stream:
        attributes["bridge.stream"] = True
    with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes) as span:
        yield span


def record_response(span: Span, body: Any, metrics: Metrics) -> None:
    """Response model, usage and finish reasons on the span; tokens in the metrics."""
    if not isinstance(body, dict):
        return
    model = str(body.get("model") or "")
    usage = Usage.from_json(body.get("usage"))
    prompt, completion = usage.prompt_tokens, usage.completion_tokens
    reasons = [str(c.get("finish_reason")) for c in body.get("choices") or [] if isinstance(c, dict)]
    if model:
        span.set_attribute("gen_ai.response.model", model)
    span.set_attribute("gen_ai.usage.input_tokens", prompt)
    span.set_attribute("gen_ai.usage.output_tokens", completion)
    if reasons:
        span.set_attribute("gen_ai.response.finish_reasons", reasons)
    if model and (prompt or completion):
        metrics.tokens.labels(model, "input").inc(prompt)
        metrics.tokens.labels(model, "output").inc(completion)


# --- the client ------------------------------------------------------------------------------


class LMStudioClient:
    """Talks to one LM Studio server over a shared, pooled HTTP client."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        retry: RetryPolicy | None = None,
        breaker: Breaker | None = None,
        metrics: Metrics | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.http = http
        self.transport = transport  # the client's own transport, for the fast path of `_exchange`
        self._base = str(http.base_url).rstrip("/")
        self._urls: dict[str, httpx.URL] = {}
        self._json_headers = httpx.Headers({**http.headers, **JSON_HEADERS})
        self.retry = retry or RetryPolicy()
        self.breaker = breaker
        self.metrics = metrics or Metrics()
        self.models_api: str | None = None  # detected once: "api-v1" | "api-v0" | "openai"

    @classmethod
    def create(
        cls,
        base_url: str,
        *,
        token: str | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 120.0,
        max_connections: int = 100,
        retry: RetryPolicy | None = None,
        breaker: Breaker | None = None,
        metrics: Metrics | None = None,
    ) -> LMStudioClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # idle connections are dropped before servers usually drop them (uvicorn: 5 s)
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=2.0
        )
        # aiohttp's C HTTP parser under the httpx API: about 0.2 ms less CPU per call than httpcore's h11
        transport = AiohttpTransport(limits=limits, trust_env=False)
        http = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s, pool=connect_timeout_s),
            transport=transport,
        )
        return cls(http, retry=retry, breaker=breaker, metrics=metrics, transport=transport)

    async def _guarded(
        self, once: Callable[[], Awaitable[T]], deadline: float | None = None, operation: str = "request"
    ) -> T:
        """One logical call: retried, then counted by the breaker only once its retries are spent.

        Latency, outcome and retries go to the metrics; the retry count to the current span.
        """
        retries = 0

        def on_retry(attempt: int, exc: BaseException) -> None:
            nonlocal retries
            retries = attempt
            self.metrics.lmstudio_retries.labels(getattr(exc, "code", type(exc).__name__)).inc()

        def call() -> Awaitable[T]:
            return call_with_retries(once, self.retry, deadline=deadline, on_retry=on_retry)

        started, outcome = time.perf_counter(), "ok"
        try:
            return await (call() if self.breaker is None else self.breaker.call(call))
        except BridgeError as exc:
            outcome = exc.code
            raise
        finally:
            self.metrics.lmstudio_duration.labels(operation, outcome).observe(time.perf_counter() - started)
            if retries:
                trace.get_current_span().set_attribute("bridge.retry.attempts", retries)

    @property
    def base_url(self) -> str:
        return str(self.http.base_url).rstrip("/")

    async def aclose(self) -> None:
        await self.http.aclose()

    def _url(self, path: str) -> httpx.URL:
        """The parsed URL of an LM Studio path (parsing costs about 60 µs, so it is done once per path)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self._base + path)
        return url

    async def _exchange(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        *,
        timeout_s: float | None = None,
        model: str | None = None,
    ) -> httpx.Response:
        """One request with its body read, failures mapped to `LLMError`s. It goes straight to the
        pooled transport: the client layer's cookie, auth and redirect handling are not needed here
        and cost about 0.15 ms a call."""
        timeout = self.http.timeout if timeout_s is None else httpx.Timeout(timeout_s, connect=min(timeout_s, 5))
        headers = self.http.headers if content is None else self._json_headers
        try:
            if self.transport is None:
                response = await self.http.request(method, path, content=content, headers=headers, timeout=timeout)
            else:
                request = httpx.Request(
                    method,
                    self._base + path,
                    headers=headers,
                    content=content,
                    extensions={"timeout": timeout.as_dict()},
                )
                response = await self.transport.handle_async_request(request)
                await response.aread()  # reads to the end, then releases the connection
        except httpx.HTTPError as exc:
            raise error_for_exception(exc) from exc
        error = error_for_response(response, model)
        if error is not None:
            raise error
        return response

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        model: str | None = None,
        timeout_s: float | None = None,
        deadline: float | None = None,
    ) -> Any:
        """One call with retries; returns the decoded JSON body."""

        async def once() -> Any:
            # the read timeout (or the longer `timeout_s`) still applies inside a run: a deadline only shortens it
            limit = self.http.timeout.read if timeout_s is None else timeout_s
            if deadline is not None:
                remaining = max(0.001, deadline - time.monotonic())
                limit = remaining if limit is None else min(limit, remaining)
            content = None if json_body is None else json.dumps(json_body).encode()
            response = await self._exchange(method, path, content, timeout_s=limit, model=model)
            return response.json()

        return await self._guarded(once, deadline, _operation(path))

    async def forward(self, path: str, content: bytes, *, model: str | None = None) -> httpx.Response:
        """POST a client's JSON body as is (retried); the response is LM Studio's, untouched."""
        with gen_ai_span(_operation(path), model) as span:
            response = await self._forward(path, content, model)
            if span.is_recording() and "json" in response.headers.get("content-type", ""):
                with contextlib.suppress(ValueError):
                    record_response(span, response.json(), self.metrics)
            return response

    async def _forward(self, path: str, content: bytes, model: str | None) -> httpx.Response:

        async def once() -> httpx.Response:
            return await self._exchange("POST", path, content, model=model)

        return await self._guarded(once, operation=_operation(path))

    async def open_stream(self, path: str, content: bytes, *, model: str | None = None) -> httpx.Response:
        """POST and return the response with its body unread (retried until LM Studio accepts it).

        The caller must `aclose()` it.
        """

        async def once() -> httpx.Response:
            request = self.http.build_request("POST", path, content=content, headers=JSON_HEADERS)
            try:
                response = await self.http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise error_for_exception(exc) from exc
            if response.status_code >= 400 or "json" in response.headers.get("content-type", ""):
                try:
                    await response.aread()
                except httpx.HTTPError as exc:
                    raise error_for_exception(exc) from exc
                finally:
                    await response.aclose()
                error = error_for_response(response, model)
                if error is not None:
                    raise error
            return response

        with gen_ai_span(_operation(path), model, stream=True):
            return await self._guarded(once, operation=_operation(path))

    async def ping(self, timeout_s: float = 3.0) -> None:
        """One quick call, no retries: raises an `LLMError` when LM Studio does not answer properly."""
        await self._exchange("GET", "/v1/models", timeout_s=timeout_s)

    async def _probe(self, path: str) -> Any:
        """GET a model-list endpoint: its JSON body, or None when this server does not have it."""

        async def once() -> Any:
            try:
                response = await self.http.get(path)
            except httpx.HTTPError as exc:
                raise error_for_exception(exc) from exc
            if response.status_code == 429 or response.status_code >= 500:
                raise error_for_response(response) or LLMResponseError(f"LM Studio answered {response.status_code}")
            if response.status_code >= 400:
                return None
            try:
                body = response.json()
            except ValueError:
                return None
            # LM Studio answers an unknown endpoint with 200 {"error": "Unexpected endpoint or method..."}
            return None if isinstance(body, dict) and "error" in body else body

        return await self._guarded(once, operation="list_models")

    async def list_models(self) -> list[ModelInfo]:
        """Every model LM Studio knows, from the richest model-list API it has (detected once)."""
        apis = [api for api in MODEL_APIS if api[0] == self.models_api] or list(MODEL_APIS)
        for name, path, parse in apis:
            body = await self._probe(path)
            models = parse(body) if body is not None else None
            if models is not None:
                self.models_api = name
                return models
        if self.models_api is not None:  # the detected API went away (LM Studio was swapped): detect again
            self.models_api = None
            return await self.list_models()
        raise LLMResponseError("LM Studio answered no model list on /api/v1/models, /api/v0/models or /v1/models")

    async def chat(
        self, payload: dict[str, Any], *, timeout_s: float | None = None, deadline: float | None = None
    ) -> ChatResult:
        """Non-streamed chat completion (retried), traced as a GenAI `chat <model>` span."""
        with gen_ai_span("chat", payload.get("model")) as span:
            body = await self.request_json(
                "POST",
                "/v1/chat/completions",
                json_body=payload,
                model=payload.get("model"),
                timeout_s=timeout_s,
                deadline=deadline,
            )
            result = parse_chat(body)
            record_response(span, body, self.metrics)
            return result

    async def chat_stream(
        self, payload: dict[str, Any], *, timeout_s: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Streamed chat completion: yields each decoded chunk. Not retried once bytes have arrived."""
        timeout = httpx.USE_CLIENT_DEFAULT if timeout_s is None else httpx.Timeout(timeout_s, connect=min(timeout_s, 5))
        body = {**payload, "stream": True}
        try:
            async with self.http.stream("POST", "/v1/chat/completions", json=body, timeout=timeout) as response:
                if response.status_code >= 400:
                    await response.aread()
                    error = error_for_response(response, payload.get("model"))
                    raise error or LLMResponseError(f"LM Studio answered {response.status_code}")
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        yield json.loads(data)
                    except ValueError as exc:
                        raise LLMResponseError("LM Studio sent a stream chunk that is not JSON") from exc
        except httpx.HTTPError as exc:
            raise error_for_exception(exc) from exc
        raise LLMResponseError("LM Studio stream ended without [DONE]")

    async def chat_streamed(self, payload: dict[str, Any], *, timeout_s: float | None = None) -> ChatResult:
        """A streamed completion assembled into the same result `chat` returns."""
        assembler = ChatAssembler()
        async for chunk in self.chat_stream(payload, timeout_s=timeout_s):
            assembler.add(chunk)
        return assembler.result()
