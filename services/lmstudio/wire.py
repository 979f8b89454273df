"""How one request goes to an LM Studio host and its answer comes back, failures raised as `LLMError`s.

An answer read whole goes straight on the transport's own aiohttp session (the same connection pool) and
comes back as a light `Buffered`: no httpx request, response, byte stream and decoder chain around the
bytes, about 0.1 ms of CPU less per call (docs/performance.md). Streams, clients without the aiohttp
transport (tests), and every request while spans are exported (the tracing instrumentation wraps httpx's
transport) go through httpx.
"""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from services.lmstudio.answer import Answer, Buffered
from services.lmstudio.errors import error_for_exception

Timeouts = dict[str, float | None]  # httpx's: connect, read, write, pool


class Wire:
    def __init__(self, http: httpx.AsyncClient, transport: httpx.AsyncBaseTransport | None) -> None:
        self.http = http
        self.transport = transport  # the client's own transport: requests skip the client layer
        self.base = str(http.base_url).rstrip("/")
        self.direct = isinstance(transport, AiohttpTransport)  # answers read whole go on aiohttp itself
        self.default_timeouts: Timeouts = http.timeout.as_dict()
        # built once: a call whose limit leaves the client's as they are (the read timeout itself, the usual case)
        # makes no timeout objects
        self._default_client_timeout = _client_timeout(self.default_timeouts)
        read = self.default_timeouts["read"]
        self._same_limit = read if read is not None and self._limits(read) == self.default_timeouts else None
        self._json_headers = httpx.Headers({**http.headers, "Content-Type": "application/json"})
        self._urls: dict[str, httpx.URL] = {}
        # aiohttp decodes these encodings itself (httpx may offer more than aiohttp can decode)
        plain = {**dict(http.headers.items()), "accept-encoding": "gzip, deflate"}  # httpx's keys: lower case
        self._direct_headers = (plain, {**plain, "content-type": "application/json"})

    def timeouts(self, timeout_s: float | None) -> Timeouts:
        """The client's time limits, reading (and writing) for `timeout_s` when given: connecting and waiting for
        a pooled connection keep the configured limit (BRIDGE_LMSTUDIO_CONNECT_TIMEOUT_S), shortened only to
        `timeout_s` when that is shorter (a run's deadline)."""
        if timeout_s is None or timeout_s == self._same_limit:
            return self.default_timeouts
        return self._limits(timeout_s)

    def _limits(self, timeout_s: float) -> Timeouts:
        limits = dict(self.default_timeouts, read=timeout_s, write=timeout_s)
        for name in ("connect", "pool"):
            configured = limits[name]
            limits[name] = timeout_s if configured is None else min(configured, timeout_s)
        return limits

    async def exchange(self, method: str, path: str, content: bytes | None, timeouts: Timeouts) -> Answer:
        """Sent once, the answer's body read whole."""
        if self.direct:
            return await self._direct(method, path, content, timeouts)
        return await read(await self._through_httpx(method, path, content, timeouts))

    async def open(self, path: str, content: bytes) -> httpx.Response:
        """POSTed through httpx, the answer's body unread (the caller reads or closes it)."""
        return await self._through_httpx("POST", path, content, self.default_timeouts)

    async def _through_httpx(self, method: str, path: str, content: bytes | None, timeouts: Timeouts) -> httpx.Response:
        """Straight to the pooled transport: the client layer's cookie, auth and redirect handling are not
        needed here and cost CPU on every call (see docs/performance.md)."""
        headers = self.http.headers if content is None else self._json_headers
        url = self._urls.get(path)
        if url is None:  # parsed once per path
            url = self._urls[path] = httpx.URL(self.base + path)
        request = httpx.Request(method, url, headers=headers, content=content, extensions={"timeout": timeouts})
        try:
            if self.transport is None:
                return await self.http.send(request, stream=True)
            return await self.transport.handle_async_request(request)
        except (httpx.HTTPError, aiohttp.ClientError) as exc:
            raise error_for_exception(exc) from exc

    async def _direct(self, method: str, path: str, content: bytes | None, timeouts: Timeouts) -> Buffered:
        """On the transport's aiohttp session, with the headers, timeouts and error mapping of the transport."""
        assert isinstance(self.transport, AiohttpTransport)
        session = self.transport.client
        if not isinstance(session, aiohttp.ClientSession):  # made on first use, in the loop, as the transport does
            session = self.transport.client = self.transport.get_client()
        timeout = self._default_client_timeout if timeouts is self.default_timeouts else _client_timeout(timeouts)
        try:
            async with session.request(
                method,
                self.base + path,
                headers=self._direct_headers[content is not None],
                data=content,
                allow_redirects=False,
                compress=False,
                timeout=timeout,
            ) as response:
                return Buffered(response.status, response.headers, await response.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise error_for_exception(exc) from exc


def _client_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(sock_connect=timeouts["connect"], sock_read=timeouts["read"], connect=timeouts["pool"])


async def read(response: httpx.Response) -> httpx.Response:
    """The body read to the end (the connection released); a failure while reading as an `LLMError`."""
    try:
        await response.aread()
    except BaseException as exc:
        await response.aclose()
        if isinstance(exc, httpx.HTTPError | aiohttp.ClientError):
            raise error_for_exception(exc) from exc
        raise
    return response
