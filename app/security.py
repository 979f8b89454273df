"""Pure ASGI middlewares: API keys on /v1/* and /mcp, and a request body size limit.

Pure ASGI (not BaseHTTPMiddleware) so streaming and client-disconnect detection keep working.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import problem_response
from services.access import Access, KeyRing
from services.errors import BridgeError, PayloadTooLargeError, UnauthorizedError

OPEN_PATHS = ("/healthz", "/readyz")


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def access_of(scope: Scope) -> Access | None:
    """The access of the request's API key (None: no keys are configured, everything is allowed)."""
    state = scope.get("state")
    return state.get("access") if state else None


class APIKeyMiddleware:
    """`Authorization: Bearer <key>` on every /v1/* route and /mcp (and /metrics if asked); the key's
    access goes on the request (`access_of`), and its requests-per-minute limit is applied here."""

    def __init__(self, app: ASGIApp, keys: KeyRing, *, protect_metrics: bool = False) -> None:
        self.app = app
        self.keys = keys
        self.prefixes = ("/v1/", "/mcp") + (("/metrics",) if protect_metrics else ())

    def protects(self, path: str) -> bool:
        return path == "/v1" or path.startswith(self.prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys.enabled or not self.protects(scope["path"]):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        access = self.keys.resolve(token) if token is not None else None
        if access is None:
            detail = "The API key is not valid" if token else "An API key is required: Authorization: Bearer <key>"
            await problem_response(UnauthorizedError(detail), scope["path"])(scope, receive, send)
            return
        try:
            await self.keys.limits.take_request(access)
        except BridgeError as exc:
            await problem_response(exc, scope["path"])(scope, receive, send)
            return
        scope.setdefault("state", {})["access"] = access
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuses request bodies over `max_bytes` with 413: by Content-Length, or by reading the body
    (up to the limit) before the app sees it and replaying it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending its body
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLargeError(f"The request body is larger than {self.max_bytes} bytes", limit=self.max_bytes)
        await problem_response(error, scope["path"])(scope, receive, send)
