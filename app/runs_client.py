"""A client of a running gateway's runs API (`/v1/runs`), for `lmstudio-bridge runs`: list, read, follow (resuming
after a dropped connection with `Last-Event-ID`), cancel, and decide approvals. HTTP only: it imports nothing of
the gateway, so it works against any gateway the URL points at."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = ("run.completed", "run.failed")
RESUME_WITHIN_S = 60.0  # how long `follow` keeps trying to get a dropped stream back
_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)


class GatewayError(Exception):
    """The gateway answered a problem, or could not be reached; `str()` is the message for a person."""

    def __init__(self, message: str, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True, slots=True)
class Event:
    """One Server-Sent Event of a run: its sequence number, name and JSON data."""

    id: int | None
    event: str
    data: Any


def _problem(response: httpx.Response) -> GatewayError:
    try:
        body = response.json()
    except ValueError:
        return GatewayError(f"HTTP {response.status_code}: {response.text[:200]}", status=response.status_code)
    if isinstance(body, dict) and "detail" in body:
        return GatewayError(str(body["detail"]), body.get("code"), response.status_code)
    return GatewayError(f"HTTP {response.status_code}: {str(body)[:200]}", status=response.status_code)


class RunsClient:
    """The runs API of the gateway at `url`, with `api_key` as a bearer token when given."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # a stream is read for as long as the run lasts: no read deadline (the gateway sends keep-alives)
        timeout = httpx.Timeout(timeout_s, read=None)
        self.http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout, trust_env=False)

    async def __aenter__(self) -> RunsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayError(f"cannot reach the gateway at {self.url}: {exc or type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise _problem(response)
        return response.json() if response.content else None

    async def list(self, filters: dict[str, Any]) -> dict[str, Any]:
        """One page of GET /v1/runs (`filters`: status, model, server, since, limit, cursor)."""
        params = {k: v for k, v in filters.items() if v is not None}
        return dict(await self._request("GET", "/v1/runs", params=params))

    async def get(self, run_id: str) -> dict[str, Any]:
        return dict(await self._request("GET", f"/v1/runs/{quote(run_id, safe='')}"))

    async def cancel(self, run_id: str) -> dict[str, Any]:
        return dict(await self._request("POST", f"/v1/runs/{quote(run_id, safe='')}/cancel"))

    async def decide(self, run_id: str, call_id: str, decision: str, reason: str) -> dict[str, Any]:
        path = f"/v1/runs/{quote(run_id, safe='')}/approvals/{quote(call_id, safe='')}"
        return dict(await self._request("POST", path, json={"decision": decision, "reason": reason}))

    async def follow(
        self, run_id: str, after: int = 0, resume_within_s: float = RESUME_WITHIN_S, on_resume: Any = None
    ) -> AsyncIterator[Event]:
        """The run's events after `after`, live until the terminal one. A dropped connection is opened again
        with `Last-Event-ID` = the last event seen (so nothing is missed or repeated) for up to
        `resume_within_s` of failed attempts; `on_resume(last_id, error)` is called before each attempt."""
        path = f"/v1/runs/{quote(run_id, safe='')}/events"
        last = after
        failing_since: float | None = None
        attempt = 0
        while True:
            try:
                async for event in self._stream(path, last):
                    failing_since, attempt = None, 0
                    if event.id is not None:
                        last = event.id
                    yield event
                    if event.event in TERMINAL:
                        return
                error: Exception = GatewayError("the stream ended before the run did")
            except httpx.TransportError as exc:  # refused, reset, cut mid-stream
                error = exc
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > resume_within_s:
                raise GatewayError(f"lost the event stream of {run_id} at {self.url} ({error}); gave up") from None
            if on_resume is not None:
                on_resume(last, error)
            await asyncio.sleep(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
            attempt += 1

    async def _stream(self, path: str, last: int) -> AsyncIterator[Event]:
        headers = {"Last-Event-ID": str(last), "Accept": "text/event-stream"}
        async with self.http.stream("GET", path, headers=headers) as response:
            if response.status_code >= 400:
                await response.aread()
                raise _problem(response)
            async for event in parse_sse(response.aiter_lines()):
                yield event


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[Event]:
    """Server-Sent Events from a stream's lines (comments such as keep-alives skipped)."""
    name, seq = "message", None
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    payload: Any = json.loads(text)
                except ValueError:
                    payload = text
                yield Event(seq, name, payload)
            name, data, seq = "message", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id" and value.isdigit():
            seq = int(value)
