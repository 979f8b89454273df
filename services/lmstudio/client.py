"""The LM Studio client: one pooled `httpx.AsyncClient` shared by every call; each call retried, counted by
the breaker once its retries are spent, and its failures mapped to the `LLMError` family (how a request
goes over the wire is `wire.py`)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import httpx
from httpx_aiohttp import AiohttpTransport
from opentelemetry import trace

from services.breaker import Breaker
from services.errors import BridgeError, LLMError, LLMResponseError, ModelNotFoundError, NoModelLoadedError
from services.lmstudio.answer import Answer
from services.lmstudio.apis import API_V1, HOST_APIS, HostAPI
from services.lmstudio.chat import ChatResult, parse_chat
from services.lmstudio.errors import decoded, error_for_chat, error_for_probe, error_for_response
from services.lmstudio.listing import ModelInfo, with_props
from services.lmstudio.retry import RetryPolicy, call_with_retries
from services.lmstudio.telemetry import gen_ai_span, operation_name, record_chat, record_response, span_host
from services.lmstudio.wire import Wire, read
from services.metrics import Metrics

T = TypeVar("T")
CHAT_PATH = "/v1/chat/completions"

ResponseCheck = Callable[[Answer, str | None], LLMError | None]
# (the error, time.monotonic() when the failed call began) -> the error to raise instead
ModelErrorHook = Callable[[LLMError, float], Awaitable[LLMError]]


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
        name: str | None = None,
        on_model_error: ModelErrorHook | None = None,
    ) -> None:
        self.http = http
        self.wire = Wire(http, transport)
        self.name = name or self.wire.base  # the host's name in metrics, spans and listings
        self._span_host = span_host(self.name, http.base_url)
        self.retry = retry or RetryPolicy()
        self.breaker = breaker
        self.metrics = metrics or Metrics()
        self.api: HostAPI | None = None  # the host's API (`apis.HOST_APIS`), detected by the first listing
        # told when LM Studio says a model is missing or none is loaded (the `ModelCatalog` of this client's
        # models: its cached list is out of date, see `ModelCatalog.over`); what it returns is raised instead
        self.on_model_error = on_model_error

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
        name: str | None = None,
        on_model_error: ModelErrorHook | None = None,
    ) -> LMStudioClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # idle connections are dropped before servers usually drop them (uvicorn: 5 s)
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=2.0
        )
        # aiohttp's C HTTP parser under the httpx API: less CPU per call than httpcore's h11 (docs/performance.md)
        transport = AiohttpTransport(limits=limits, trust_env=False)
        http = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s, pool=connect_timeout_s),
            transport=transport,
        )
        return cls(
            http,
            retry=retry,
            breaker=breaker,
            metrics=metrics,
            transport=transport,
            name=name,
            on_model_error=on_model_error,
        )

    @property
    def base_url(self) -> str:
        return self.wire.base

    @property
    def models_api(self) -> str | None:
        """The detected API's name (`HostAPI.name`), for people; None before the first listing."""
        return None if self.api is None else self.api.name

    @property
    def reports_load_state(self) -> bool:
        """Whether the model list says which models are loaded (LM Studio's REST APIs and llama.cpp's list do;
        OpenAI's list does not, so refetching it after a load would tell nothing)."""
        return self.api is not None and self.api.reports_load_state

    async def aclose(self) -> None:
        await self.http.aclose()

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
            self.metrics.lmstudio_retries.labels(getattr(exc, "code", type(exc).__name__), self.name).inc()

        def call() -> Awaitable[T]:
            return call_with_retries(once, self.retry, deadline=deadline, on_retry=on_retry)

        started, outcome = time.perf_counter(), "ok"
        began = time.monotonic()
        try:
            return await (call() if self.breaker is None else self.breaker.call(call))
        except (ModelNotFoundError, NoModelLoadedError) as exc:
            outcome = exc.code
            if self.on_model_error is None:
                raise
            model_error: LLMError = exc
        except BridgeError as exc:
            outcome = exc.code
            raise
        finally:
            metrics = self.metrics
            metrics.child(metrics.lmstudio_duration, operation, outcome, self.name).observe(
                time.perf_counter() - started
            )
            if retries:
                trace.get_current_span().set_attribute("bridge.retry.attempts", retries)
        replacement = await self.on_model_error(model_error, began)
        if replacement is model_error:
            raise model_error
        raise replacement from model_error

    async def _send(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        *,
        timeout_s: float | None = None,
        model: str | None = None,
        check: ResponseCheck = error_for_response,
    ) -> Answer:
        """The one way a request goes to LM Studio (`_open` for a stream): sent once, its body read, the answer
        judged by `check`, every failure raised as an `LLMError`."""
        answer = await self.wire.exchange(method, path, content, self.wire.timeouts(timeout_s))
        error = check(answer, model)
        if error is not None:
            raise error
        return answer

    async def _open(self, path: str, content: bytes, model: str | None) -> httpx.Response:
        """POST for a stream: a successful non-JSON answer comes back with its body unread (the caller must
        `aclose()` it); any other answer is read and judged as `_send` judges it."""
        response = await self.wire.open(path, content)
        if response.status_code < 400 and "json" not in response.headers.get("content-type", ""):
            return response
        error = error_for_response(await read(response), model)
        if error is not None:
            raise error
        return response

    def trace_requests(self) -> None:
        """Every request through httpx from now on: the tracing instrumentation wraps its transport."""
        self.wire.direct = False

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        model: str | None = None,
        timeout_s: float | None = None,
        deadline: float | None = None,
        check: ResponseCheck = error_for_response,
    ) -> Any:
        """One call with retries; returns the decoded JSON body (`check` judges each answer)."""
        content = None if json_body is None else json.dumps(json_body).encode()

        async def once() -> Any:
            # the read timeout (or the longer `timeout_s`) still applies inside a run: a deadline only shortens it
            limit = self.http.timeout.read if timeout_s is None else timeout_s
            if deadline is not None:
                remaining = max(0.001, deadline - time.monotonic())
                limit = remaining if limit is None else min(limit, remaining)
            response = await self._send(method, path, content, timeout_s=limit, model=model, check=check)
            return decoded(response)

        return await self._guarded(once, deadline, operation_name(path))

    async def forward(self, path: str, content: bytes, *, model: str | None = None) -> Answer:
        """POST a client's JSON body as is (retried); the answer is LM Studio's, untouched."""
        operation = operation_name(path)
        check = error_for_chat if path == CHAT_PATH else error_for_response
        with gen_ai_span(operation, model, host=self._span_host) as span:
            send = partial(self._send, "POST", path, content, model=model, check=check)
            response = await self._guarded(send, operation=operation)
            if span.is_recording() and "json" in response.headers.get("content-type", ""):
                with contextlib.suppress(ValueError):
                    record_response(span, decoded(response), self.metrics)
            return response

    async def open_stream(self, path: str, content: bytes, *, model: str | None = None) -> httpx.Response:
        """POST and return the response with its body unread (retried until LM Studio accepts it).

        The caller must `aclose()` it.
        """
        operation = operation_name(path)
        with gen_ai_span(operation, model, stream=True, host=self._span_host):
            return await self._guarded(partial(self._open, path, content, model), operation=operation)

    async def ping(self, timeout_s: float = 3.0) -> None:
        """One quick call, no retries: raises an `LLMError` when LM Studio does not answer properly."""
        await self._send("GET", "/v1/models", timeout_s=timeout_s)

    async def list_models(self) -> list[ModelInfo]:
        """Every model the host knows, from the richest model-list API it has (detected once: each listing
        path is asked at most once, and every API on that path reads the answer)."""
        apis = [self.api] if self.api is not None else list(HOST_APIS)
        answers: dict[str, Answer] = {}
        for api in apis:
            if api.listing_path not in answers:
                probe = partial(self._send, "GET", api.listing_path, check=error_for_probe)
                answers[api.listing_path] = await self._guarded(probe, operation="list_models")
            models = api.models(answers[api.listing_path])
            if models is not None:
                self.api = api
                return await self._with_props(api, models)
        if self.api is not None:  # the detected API went away (the server was swapped): detect again
            self.api = None
            return await self.list_models()
        paths = ", ".join(dict.fromkeys(api.listing_path for api in HOST_APIS))
        raise LLMResponseError(f"LM Studio answered no model list on {paths}")

    async def _with_props(self, api: HostAPI, models: list[ModelInfo]) -> list[ModelInfo]:
        """A single loaded model's window as the server's props say it (llama.cpp's `/props`: one slot's
        share); the list as it is when there are none, or they cannot be read."""
        if api.props_path is None or len(models) != 1 or not models[0].loaded:
            return models
        probe = partial(self._send, "GET", api.props_path, check=error_for_probe)
        try:
            answer = await self._guarded(probe, operation="list_models")
        except LLMError:
            return models
        return with_props(models, decoded(answer)) if answer.status_code < 400 else models

    async def loaded_instances(self, key: str) -> list[str]:
        """The instance ids of a model's loaded instances (REST API, LM Studio 0.4+): `loaded_instances[].id`,
        which need not be the key (a second instance is `<key>:2`)."""
        body = await self.request_json("GET", API_V1.listing_path)
        models = body.get("models") if isinstance(body, dict) else None
        for entry in models if isinstance(models, list) else []:
            if isinstance(entry, dict) and entry.get("key") == key:
                instances = entry.get("loaded_instances") or []
                return [str(i["id"]) for i in instances if isinstance(i, dict) and i.get("id")]
        return []

    async def load_model(self, key: str, ttl: int | None = None) -> dict[str, Any]:
        """Load a model (REST API, LM Studio 0.4+). The answer always names the new instance `instance_id`
        (LM Studio's documentation has called it `instance_id` and `model_instance_id`)."""
        payload: dict[str, Any] = {"model": key} | ({"ttl": ttl} if ttl is not None else {})
        answer = await self.request_json("POST", str(API_V1.load_path), json_body=payload, model=key)
        answer = dict(answer) if isinstance(answer, dict) else {}
        aliases = [answer.pop(name, None) for name in ("instance_id", "model_instance_id", "identifier")]
        instance = next((str(a) for a in aliases if a), key)
        return {**answer, "instance_id": instance, "status": answer.get("status") or "loaded"}

    async def unload_model(self, key: str) -> dict[str, Any]:
        """Unload every loaded instance of a model (REST API, LM Studio 0.4+); LM Studio's unload takes an
        INSTANCE id, read from the model list. A model that is not loaded is left as it is."""
        instances = await self.loaded_instances(key)
        for instance in instances:
            await self.request_json("POST", str(API_V1.unload_path), json_body={"instance_id": instance}, model=key)
        return {
            "instance_id": instances[0] if instances else None,
            "instance_ids": instances,
            "status": "unloaded" if instances else "not-loaded",
        }

    async def chat(
        self, payload: dict[str, Any], *, timeout_s: float | None = None, deadline: float | None = None
    ) -> ChatResult:
        """Non-streamed chat completion (retried), traced as a GenAI `chat <model>` span."""
        with gen_ai_span("chat", payload.get("model"), host=self._span_host) as span:
            body = await self.request_json(
                "POST",
                CHAT_PATH,
                json_body=payload,
                model=payload.get("model"),
                timeout_s=timeout_s,
                deadline=deadline,
                check=error_for_chat,
            )
            result = parse_chat(body)
            record_chat(span, result, self.metrics)
            return result
