"""A remote MCP server behind a real OAuth 2.1 authorization server, both in the test's process: the MCP SDK's
server-side auth (its authorize, token, registration, revocation and metadata routes, its bearer check with
the RFC 8707 audience check on) over `MemoryAuthProvider`, a small in-memory provider; the SDK's token route
gains the client-credentials grant here (the SDK's server has none).

The test drives it: it consents to every authorization at once (a browser only follows redirects), and it can
revoke tokens, shorten their life and mint them for another audience.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

from mcp.server.auth.handlers.token import TokenHandler
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.middleware.client_auth import ClientAuthenticator
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    IdentityAssertionParams,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.processes import free_port, serve_in_loop

SCOPE = "tools"
MACHINE_ID = "gateway-machine"  # a client registered by hand for the client-credentials grant


class MemoryAuthProvider:
    """The SDK's `OAuthAuthorizationServerProvider`, in memory; every token it ever issued is in `issued`."""

    def __init__(self, resource: str) -> None:
        self.resource = resource
        self.clients: dict[str, OAuthClientInformationFull] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, RefreshToken] = {}
        self.pairs: dict[str, str] = {}  # refresh token -> its access token
        self.issued: list[str] = []
        self.grants: Counter[str] = Counter()  # token requests answered, by grant
        self.access_ttl_s = 3600  # the life of the next access tokens
        self.audience: str | None = None  # mint the next tokens for this resource instead (the wrong audience)
        self.machine_secret = secrets.token_urlsafe(24)
        self.clients[MACHINE_ID] = OAuthClientInformationFull(
            client_id=MACHINE_ID,
            client_secret=self.machine_secret,
            redirect_uris=None,
            grant_types=["client_credentials"],
            token_endpoint_auth_method="client_secret_basic",
            scope=SCOPE,
        )

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        assert client_info.client_id is not None
        self.clients[client_info.client_id] = client_info

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        """Consents at once: straight back to the client's redirect URI with a code."""
        code = secrets.token_urlsafe(32)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or [SCOPE],
            expires_at=time.time() + 300,
            client_id=client.client_id or "",
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
        )
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(self, client: OAuthClientInformationFull, code: str) -> AuthorizationCode | None:
        return self.codes.get(code)

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, code: AuthorizationCode
    ) -> OAuthToken:
        del self.codes[code.code]
        self.grants["authorization_code"] += 1
        return self._issue(client.client_id or "", code.scopes, code.resource, refresh=True)

    async def load_refresh_token(self, client: OAuthClientInformationFull, token: str) -> RefreshToken | None:
        return self.refresh.get(token)

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        self._revoke(token.token)  # rotated
        self.grants["refresh_token"] += 1
        return self._issue(client.client_id or "", scopes, token.resource, refresh=True)

    async def load_access_token(self, token: str) -> AccessToken | None:
        found = self.access.get(token)
        if found is None or (found.expires_at is not None and found.expires_at < time.time()):
            return None
        return found

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        self._revoke(token.token)

    async def exchange_identity_assertion(
        self, client: OAuthClientInformationFull, params: IdentityAssertionParams
    ) -> OAuthToken:
        raise TokenError("unsupported_grant_type", "no identity assertions here")

    def client_credentials(
        self, client: OAuthClientInformationFull, scope: str | None, resource: str | None
    ) -> OAuthToken:
        self.grants["client_credentials"] += 1
        return self._issue(client.client_id or "", (scope or SCOPE).split(), resource, refresh=False)

    def revoke_all(self) -> None:
        """Every token this server issued stops working (a person revoked the gateway's access)."""
        self.access.clear()
        self.refresh.clear()
        self.pairs.clear()

    def expire_access(self) -> None:
        """Every access token expires now (their refresh tokens still work)."""
        for token in self.access.values():
            token.expires_at = int(time.time()) - 1

    def _issue(self, client_id: str, scopes: list[str], resource: str | None, *, refresh: bool) -> OAuthToken:
        access = secrets.token_urlsafe(32)
        expires_at = int(time.time()) + self.access_ttl_s
        audience = self.audience or resource
        self.access[access] = AccessToken(
            token=access, client_id=client_id, scopes=scopes, expires_at=expires_at, resource=audience
        )
        self.issued.append(access)
        refresh_token = None
        if refresh:
            refresh_token = secrets.token_urlsafe(32)
            self.refresh[refresh_token] = RefreshToken(
                token=refresh_token, client_id=client_id, scopes=scopes, resource=resource
            )
            self.pairs[refresh_token] = access
            self.issued.append(refresh_token)
        return OAuthToken(
            access_token=access,
            token_type="Bearer",
            expires_in=self.access_ttl_s,
            scope=" ".join(scopes),
            refresh_token=refresh_token,
        )

    def _revoke(self, token: str) -> None:
        access = self.pairs.pop(token, None)
        self.refresh.pop(token, None)
        self.access.pop(access or token, None)


async def _basic_client(provider: MemoryAuthProvider, request: Request) -> OAuthClientInformationFull | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
    client = provider.clients.get(unquote(client_id))
    if client is None or not client.client_secret:
        return None
    return client if hmac.compare_digest(client.client_secret.encode(), unquote(secret).encode()) else None


def build_app(provider: MemoryAuthProvider, base: str, resource: str) -> Any:
    """The MCP server at `{base}/mcp` with the authorization server's routes at `base`; `resource`: the resource
    its metadata names (another one than its URL: a server that is not what it claims)."""
    server: MCPServer[Any] = MCPServer(
        "oauth-test",
        auth_server_provider=provider,
        auth=AuthSettings.model_validate(  # URLs as strings: validated with the settings' own URL rules
            {
                "issuer_url": base,
                "resource_server_url": resource,
                "validate_token_resource": True,
                "required_scopes": [SCOPE],
                "client_registration_options": ClientRegistrationOptions(enabled=True, valid_scopes=[SCOPE]),
                "revocation_options": RevocationOptions(enabled=True),
            }
        ),
    )

    @server.tool()
    def whoami() -> str:
        """The OAuth client the call came from."""
        token = get_access_token()
        return f"client {token.client_id}" if token else "nobody"

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return f"echo: {text}"

    app = server.streamable_http_app()
    sdk_token = TokenHandler(provider, ClientAuthenticator(provider))

    async def token(request: Request) -> Response:
        form = await request.form()
        if form.get("grant_type") != "client_credentials":
            answer: Response = await sdk_token.handle(request)
            return answer
        client = await _basic_client(provider, request)  # RFC 6749 §2.3.1: the id and secret in the header
        if client is None:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if "client_credentials" not in (client.grant_types or []):
            return JSONResponse({"error": "unauthorized_client"}, status_code=400)
        resource = form.get("resource")
        scope = form.get("scope")
        issued = provider.client_credentials(
            client, scope if isinstance(scope, str) else None, resource if isinstance(resource, str) else None
        )
        return JSONResponse(issued.model_dump(exclude_none=True), headers={"Cache-Control": "no-store"})

    app.router.routes.insert(0, Route("/token", token, methods=["POST"]))
    return app


@contextlib.asynccontextmanager
async def oauth_mcp_server(resource_path: str = "/mcp") -> AsyncIterator[tuple[str, MemoryAuthProvider]]:
    """The server running on a free port: yields its MCP URL (`.../mcp`) and its authorization server's provider;
    its metadata names the resource at `resource_path`."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    provider = MemoryAuthProvider(f"{base}{resource_path}")
    async with serve_in_loop(build_app(provider, base, f"{base}{resource_path}"), "the OAuth MCP server", port=port):
        yield f"{base}/mcp", provider
