"""Every LM Studio host behind one object: a merged model list, and each LLM call routed to a host that has
its model (`routing.rank`), going on to the next host when one fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import httpx

from services.breaker import Breaker
from services.errors import (
    BridgeError,
    InvalidRequestError,
    LLMConnectionError,
    LLMError,
    ModelNotFoundError,
    NoModelLoadedError,
    NotSupportedError,
    UpstreamUnavailableError,
)
from services.lmstudio.answer import Answer
from services.lmstudio.chat import ChatResult
from services.lmstudio.client import LMStudioClient, ModelErrorHook
from services.lmstudio.errors import counts_against_lmstudio
from services.lmstudio.hosts import HostSpec
from services.lmstudio.listing import ModelHost, ModelInfo
from services.lmstudio.retry import RetryPolicy
from services.lmstudio.routing import Host, as_now, placed, rank
from services.metrics import Metrics

T = TypeVar("T")
UNAVAILABLE_RETRY_S = 5.0  # Retry-After when no host could serve a call
MODEL_ERRORS = (ModelNotFoundError, NoModelLoadedError)


def fails_over(exc: BridgeError) -> bool:
    """Errors another host may not have: it is down or failing, rate limits, or lost the model."""
    return (
        counts_against_lmstudio(exc)
        or isinstance(exc, (UpstreamUnavailableError, *MODEL_ERRORS))
        or exc.code == "upstream_rate_limited"
    )


class LMStudioHosts:
    """The LM Studio hosts the gateway talks to (one or several), as one upstream."""

    def __init__(self, hosts: list[Host]) -> None:
        if not hosts:
            raise ValueError("at least one LM Studio host is needed")
        self.hosts = hosts
        self._by_name = {h.name: h for h in hosts}

    @classmethod
    def create(
        cls,
        specs: list[HostSpec],
        *,
        breaker: Callable[[HostSpec], Breaker | None] = lambda spec: None,
        retry: RetryPolicy | None = None,
        metrics: Metrics | None = None,
        on_model_error: ModelErrorHook | None = None,
        **options: Any,
    ) -> LMStudioHosts:
        """A client per host, each with its own breaker (`breaker(spec)`) and retry budget; `on_model_error`:
        see `LMStudioClient` (a host that says a model is missing makes the merged list out of date)."""
        clients = [
            LMStudioClient.create(
                s.url,
                token=s.token,
                name=s.name,
                breaker=breaker(s),
                retry=retry,
                metrics=metrics,
                on_model_error=on_model_error,
                **options,
            )
            for s in specs
        ]
        return cls([Host(spec, client) for spec, client in zip(specs, clients, strict=True)])

    @property
    def clients(self) -> list[LMStudioClient]:
        return [h.client for h in self.hosts]

    @property
    def reports_load_state(self) -> bool:
        """Whether the model lists say which models are loaded (see `LMStudioClient.reports_load_state`)."""
        return any(h.client.reports_load_state for h in self.hosts)

    def host(self, name: str) -> Host:
        """The host named `name` (its name in the hosts file, else its URL); 422 naming the hosts when none is."""
        found = self._by_name.get(name)
        if found is None:
            names = list(self._by_name)
            raise InvalidRequestError(
                f"No LM Studio host named {name!r}. Hosts: {', '.join(names)}", host=name, available_hosts=names
            )
        return found

    def check(self) -> None:
        """Fail fast when no host's breaker would let a call through (every host is known to be down)."""
        if any(h.admits() for h in self.hosts):
            return
        if len(self.hosts) == 1 and self.hosts[0].client.breaker is not None:
            self.hosts[0].client.breaker.check()
        raise self._unavailable("every LM Studio host is failing (circuits open)", self.hosts, [])

    def breaker_states(self) -> dict[str, str]:
        """Breaker state per host, as the metrics label them (`lmstudio` alone when there is one host)."""
        single = len(self.hosts) == 1
        return {
            "lmstudio" if single else f"lmstudio:{h.name}": h.client.breaker.state
            for h in self.hosts
            if h.client.breaker is not None
        }

    def in_flight(self) -> dict[str, int]:
        return {h.name: h.in_flight for h in self.hosts}

    async def aclose(self) -> None:
        for host in self.hosts:
            await host.client.aclose()

    # --- models

    async def list_models(self) -> list[ModelInfo]:
        """Every host's models merged (each with the hosts that have it and its state there); hosts that do
        not answer keep their last list, marked unreachable. Raises when no host answers."""
        outcomes = await asyncio.gather(*(h.client.list_models() for h in self.hosts), return_exceptions=True)
        errors: list[BridgeError] = []
        for host, outcome in zip(self.hosts, outcomes, strict=True):
            if isinstance(outcome, BridgeError):
                host.reachable = False
                errors.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                host.models, host.reachable = {m.id: m for m in outcome}, True
        if len(errors) == 1 == len(self.hosts):
            raise errors[0]
        if len(errors) == len(self.hosts):  # LLMConnectionError: the catalog keeps serving its last list
            tried = "; ".join(f"{h.name} ({e.detail})" for h, e in zip(self.hosts, errors, strict=True))
            raise LLMConnectionError(
                f"no LM Studio host listed its models; hosts tried: {tried}", hosts=[h.name for h in self.hosts]
            )
        return self._merged()

    def _merged(self) -> list[ModelInfo]:
        first: dict[str, ModelInfo] = {}
        where: dict[str, list[ModelHost]] = {}
        for host in self.hosts:
            for model in host.models.values():
                first.setdefault(model.id, model)
                state = host.state_of(model.id)
                window = model.loaded_context_length if state == "loaded" else None
                where.setdefault(model.id, []).append(ModelHost(host.name, state, window))
        return [placed(m, tuple(where[m.id])) for m in first.values()]

    def as_now(self, models: Iterable[ModelInfo]) -> list[ModelInfo]:
        """A cached model list with each host as routing knows it now: the models of a host seen down since (a
        failed ping, call or listing, an open breaker) are `unreachable` at once, not after the cache's TTL."""
        return as_now(models, self._by_name)

    async def load_model(self, key: str, ttl: int | None = None, host: str | None = None) -> dict[str, Any]:
        """Load a model on `host`, else on the best host that has it and has not loaded it yet."""
        if host is not None:
            target = self.host(host)
        else:
            ranked = rank(self.hosts, key, time.monotonic())
            target = next((h for h in ranked if key in h.models and not h.models[key].loaded), ranked[0])
        await self._require_rest_api(target)
        return {**await target.client.load_model(key, ttl), "host": target.name}

    async def unload_model(self, key: str, host: str | None = None) -> dict[str, Any]:
        """Unload every instance of a model on `host`, else on every host that lists it."""
        if host is not None:
            targets = [self.host(host)]
            await self._require_rest_api(targets[0])
        else:
            listed = [h for h in self.hosts if key in h.models] or self.hosts
            for target in listed:
                await self._detect(target)
            targets = [h for h in listed if h.client.api is not None and h.client.api.loads_models]
            if not targets:
                await self._require_rest_api(listed[0])
        instances: list[str] = []
        unloaded: list[str] = []
        for target in targets:
            answer = await target.client.unload_model(key)
            instances += answer["instance_ids"]
            unloaded += [target.name] if answer["instance_ids"] else []
        return {
            "instance_id": instances[0] if instances else None,
            "instance_ids": instances,
            "status": "unloaded" if instances else "not-loaded",
            "hosts": unloaded,
        }

    async def _detect(self, host: Host) -> None:
        if host.client.api is None:
            host.models = {m.id: m for m in await host.client.list_models()}

    async def _require_rest_api(self, host: Host) -> None:
        await self._detect(host)
        if host.client.api is None or not host.client.api.loads_models:
            where = f"LM Studio host {host.name!r}" if len(self.hosts) > 1 else "this server"
            raise NotSupportedError(
                "Loading and unloading models needs LM Studio's REST API (/api/v1, LM Studio 0.4+); "
                f"{where} offers {host.client.api.title if host.client.api else 'no model list'}"
            )

    async def readiness(self) -> list[tuple[Host, LLMError | None]]:
        """Ping every host at once (no retries); what each answered. Routing hears of it too."""
        outcomes = await asyncio.gather(*(h.client.ping() for h in self.hosts), return_exceptions=True)
        answers: list[tuple[Host, LLMError | None]] = []
        for host, outcome in zip(self.hosts, outcomes, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, LLMError):
                raise outcome
            host.reachable = outcome is None
            answers.append((host, outcome))
        return answers

    # --- LLM calls

    async def chat(
        self, payload: dict[str, Any], *, timeout_s: float | None = None, deadline: float | None = None
    ) -> ChatResult:
        """A chat completion on the best host for the payload's model; `host` and `failovers` say where."""

        def call(client: LMStudioClient) -> Awaitable[ChatResult]:
            return client.chat(payload, timeout_s=timeout_s, deadline=deadline)

        result, host, failures = await self._routed(payload.get("model"), call)
        result.host, result.failovers = host.name, failures
        return result

    async def forward(self, path: str, content: bytes, *, model: str | None = None) -> Answer:
        """POST a client's body as is to the best host for `model` (see `LMStudioClient.forward`)."""
        response, _, _ = await self._routed(model, lambda client: client.forward(path, content, model=model))
        return response

    async def open_stream(self, path: str, content: bytes, *, model: str | None = None) -> httpx.Response:
        """POST and return the response with its body unread; the host counts it in flight until it is closed."""
        response, host, _ = await self._routed(model, lambda client: client.open_stream(path, content, model=model))
        stream = response.stream  # the async transport's body: an AsyncByteStream
        if not response.is_closed and isinstance(stream, httpx.AsyncByteStream):
            host.in_flight += 1
            response.stream = _CountedStream(stream, host)
        return response

    async def _routed(
        self, model: str | None, call: Callable[[LMStudioClient], Awaitable[T]]
    ) -> tuple[T, Host, list[str]]:
        """`call` on the best host; on an error another host may not have, the next host. With one host its
        errors are raised as they are; with several, a call no host could serve is 503 naming them."""
        hosts = rank(self.hosts, model, time.monotonic())
        failures: list[tuple[Host, BridgeError]] = []
        for index, host in enumerate(hosts):
            host.in_flight += 1
            try:
                result = await call(host.client)
            except BridgeError as exc:
                if isinstance(exc, LLMConnectionError):
                    host.reachable = False  # seen down: /v1/models says so at once (`as_now`)
                if not fails_over(exc) or len(self.hosts) == 1:
                    raise
                if not isinstance(exc, MODEL_ERRORS):
                    host.failed()
                failures.append((host, exc))
                if index == len(hosts) - 1:
                    raise self._exhausted(model, failures) from exc
                continue
            finally:
                host.in_flight -= 1
            host.served += 1 / host.spec.weight
            host.reachable = True
            return result, host, [f"{h.name!r} failed ({e.detail})" for h, e in failures]
        raise AssertionError("rank() returns at least one host")

    def _exhausted(self, model: str | None, failures: list[tuple[Host, BridgeError]]) -> BridgeError:
        last = failures[-1][1]
        if all(isinstance(e, MODEL_ERRORS) for _, e in failures):
            return last  # every host says it lacks the model: the fresh list is in the last error
        if len(failures) == 1 and not isinstance(last, LLMConnectionError | UpstreamUnavailableError):
            return last  # the one host that has the model answered badly (a timeout, a 5xx): say so as it is
        subject = f"model {model!r}" if model else "the call"
        return self._unavailable(f"no LM Studio host could serve {subject}", [h for h, _ in failures], failures)

    def _unavailable(
        self, what: str, hosts: list[Host], failures: list[tuple[Host, BridgeError]]
    ) -> UpstreamUnavailableError:
        why = {h.name: e.detail for h, e in failures}
        tried = "; ".join(f"{h.name} ({why.get(h.name, 'circuit open')})" for h in hosts)
        waits = [h.client.breaker.retry_after() for h in hosts if h.client.breaker is not None]
        wait = min((w for w in waits if w > 0), default=UNAVAILABLE_RETRY_S)
        return UpstreamUnavailableError(
            f"{what}; hosts tried: {tried}", retry_after=wait, hosts=[h.name for h in hosts]
        )


class _CountedStream(httpx.AsyncByteStream):
    """A response body that takes its host's in-flight count back when it is closed. A body that breaks off has its
    host pinged once (no retries) before the error goes on: a host that died mid-answer shows `unreachable` in
    /v1/models at once (`as_now`), one that only dropped this connection stays as it was."""

    def __init__(self, inner: httpx.AsyncByteStream, host: Host) -> None:
        self._inner = inner
        self._host: Host | None = host
        self._origin = host

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except Exception:
            await self._check_host()
            raise

    async def _check_host(self) -> None:
        try:
            await self._origin.client.ping()
        except LLMError:
            self._origin.reachable = False
        else:
            self._origin.reachable = True

    async def aclose(self) -> None:
        if self._host is not None:
            self._host.in_flight -= 1
            self._host = None
        await self._inner.aclose()
