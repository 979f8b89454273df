"""The MCP SDK's OAuth client, as the gateway uses it (imported with a remote server's first connection).

The SDK's providers do the protocol: discovery, registration, PKCE, the token requests, refresh, retry.
What is added here: tokens live in the server's `ServerTokens` (sealed in the run store) with their expiry,
so a restarted gateway refreshes them before they expire; a token within the refresh margin is refreshed
before use (a client-credentials token is fetched again); a 401 is answered by ONE refresh and one retry,
never by a login (the gateway has no person at hand: the server waits for `lmstudio-bridge auth`); another
process's login or refresh is picked up from the store.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any

import httpx2
from mcp.client.auth import OAuthClientProvider, OAuthFlowError, OAuthTokenError
from mcp.client.auth.exceptions import OAuthRegistrationError
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.auth.oauth2 import OAuthContext
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata
from mcp.shared.exceptions import MCPDeprecationWarning
from pydantic import AnyUrl

from services.mcp.oauth import ServerAuth

log = logging.getLogger(__name__)
_UNATTENDED_REDIRECT = "http://127.0.0.1/callback"  # never visited: the gateway opens no logins
_FAILURES = (OAuthFlowError, OAuthTokenError, OAuthRegistrationError, httpx2.HTTPError)
_REFUSED_AFTER_REFRESH = "the server refused the access token after a refresh (revoked, or for another audience)"


class LoginRequired(OAuthFlowError):
    """Only a person's login can bring a token (raised inside the SDK's flow, handled by `_Managed`)."""


def _not_login_required(record: logging.LogRecord) -> bool:
    """The SDK logs every failed flow with its traceback; a server waiting for a login is a state, shown as one."""
    return not (record.exc_info and isinstance(record.exc_info[1], LoginRequired))


logging.getLogger("mcp.client.auth.oauth2").addFilter(_not_login_required)


@dataclass
class _Context(OAuthContext):
    """The SDK's context, with a token counted as expired `margin_s` before its expiry."""

    margin_s: float = 0.0

    def is_token_valid(self) -> bool:
        expiry, tokens = self.token_expiry_time, self.current_tokens
        return bool(tokens and tokens.access_token and (not expiry or time.time() <= expiry - self.margin_s))


class _Managed(OAuthClientProvider):
    """What the gateway adds to both SDK providers (see the module's docstring)."""

    auth: ServerAuth
    person: bool  # a login in progress (`lmstudio-bridge auth`): the SDK's whole flow may run

    def _manage(self, auth: ServerAuth, person: bool) -> None:
        self.auth, self.person = auth, person
        ctx = self.context
        self.context = _Context(**{f.name: getattr(ctx, f.name) for f in fields(ctx)}, margin_s=auth.margin_s)

    async def _initialize(self) -> None:
        await super()._initialize()
        self.context.token_expiry_time = self.auth.tokens.expires_at

    async def _handle_token_response(self, response: httpx2.Response) -> None:
        prior = self.context.current_tokens
        try:
            await super()._handle_token_response(response)
        except OAuthTokenError as exc:
            if self.person or not self.auth.for_person:
                raise
            raise LoginRequired(f"the refresh was refused: {exc}") from None  # unattended, it was a refresh
        tokens = self.context.current_tokens
        if tokens is not None and tokens.refresh_token is None and prior is not None and prior.refresh_token:
            tokens.refresh_token = prior.refresh_token  # RFC 6749 §6: a refresh answer may keep the old one
            await self.context.storage.set_tokens(tokens)

    async def _renewal(self) -> httpx2.Request | None:
        """A token request to send before the request itself, if any (the SDK refreshes a refreshable token)."""
        return None

    async def _unattended(self, request: httpx2.Request) -> bool:
        """Before a gateway request: pick up another process's login or refresh; False when the server waits
        for a login (the request then goes without a token)."""
        auth = self.auth
        if auth.needs_login or auth.reloaded or (self._initialized and not self.context.is_token_valid()):
            changed = auth.reloaded or await auth.tokens.reload()
            auth.reloaded = False
            if auth.needs_login and not changed:
                return False
            self._initialized = False
        if not self._initialized:
            await self._initialize()
        if self.context.current_tokens is None and auth.for_person:
            auth.refused("not logged in yet")
            return False
        return True

    async def _auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        auth = self.auth
        if not self.person:
            if not await self._unattended(request):
                yield request  # the server answers 401; the server's status says why
                return
            renewal = await self._renewal()
            if renewal is not None:
                try:
                    await self._handle_token_response((yield renewal))
                except _FAILURES as exc:  # the SDK's flow tries again after the server's 401
                    log.info("MCP server %r: renewing the token failed: %s", auth.cfg.name, exc)
        flow = super()._auth_flow(request)
        last: httpx2.Response | None = None
        try:
            outgoing = await flow.__anext__()
            while True:
                response = yield outgoing
                if outgoing is request:
                    last = response
                outgoing = await flow.asend(response)
        except StopAsyncIteration:
            pass
        except _FAILURES as exc:
            auth.refused(str(exc) if isinstance(exc, LoginRequired) else f"{type(exc).__name__}: {exc}")
            request.headers.pop("Authorization", None)
            yield request  # the server's own answer (401) goes back to the transport
            return
        finally:
            await flow.aclose()
        self._judge(last)

    def _judge(self, last: httpx2.Response | None) -> None:
        """What the server's answer to the request says of the token."""
        if last is not None and last.status_code == 401:
            self.auth.refused(_REFUSED_AFTER_REFRESH)
        elif last is not None and last.status_code < 400:
            self.auth.accepted()


class PersonProvider(_Managed):
    """Authorization code with PKCE (a person logs in once; the gateway refreshes from then on)."""

    def __init__(
        self,
        auth: ServerAuth,
        redirect_uri: str | None,
        show_link: Callable[[str], Awaitable[None]] | None,
        wait_callback: Callable[[], Awaitable[AuthorizationCodeResult]] | None,
    ) -> None:
        oauth = auth.oauth
        metadata = OAuthClientMetadata(
            redirect_uris=[AnyUrl(redirect_uri or _UNATTENDED_REDIRECT)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            scope=oauth.scope,
            client_name="lmstudio-bridge",
            token_endpoint_auth_method=oauth.token_auth if oauth.client_secret else "none",
        )
        assert auth.cfg.url is not None
        super().__init__(auth.cfg.url, metadata, auth.tokens, show_link, wait_callback)
        self._manage(auth, person=show_link is not None)
        self._client = (
            OAuthClientInformationFull(
                client_id=oauth.client_id,
                client_secret=oauth.client_secret,
                redirect_uris=metadata.redirect_uris,
                grant_types=metadata.grant_types,
                token_endpoint_auth_method=metadata.token_endpoint_auth_method,
                scope=oauth.scope,
            )
            if oauth.client_id
            else None
        )

    async def _initialize(self) -> None:
        await super()._initialize()
        if self._client is not None:  # a client registered by hand (mcp.json's client_id)
            self.context.client_info = self._client

    async def _perform_authorization(self) -> httpx2.Request:
        """After a 401: a person's login when one is at hand, else one refresh (the SDK then retries once)."""
        if self.person:
            return await super()._perform_authorization()
        if await self.auth.tokens.reload():  # another replica refreshed (and rotated the refresh token) first
            self.context.current_tokens = await self.auth.tokens.get_tokens()
        if self.context.can_refresh_token():
            return await self._refresh_token()
        raise LoginRequired("no refresh token, or the refresh was refused")


class MachineProvider(_Managed, ClientCredentialsOAuthProvider):
    """Client credentials (an unattended gateway): a new token whenever the last one is about to expire."""

    def __init__(self, auth: ServerAuth) -> None:
        oauth = auth.oauth
        assert auth.cfg.url is not None and oauth.client_id and oauth.client_secret
        with warnings.catch_warnings():  # no `issuer`: the SDK's deprecation warning (docs/configuration.md says why)
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            ClientCredentialsOAuthProvider.__init__(
                self,
                auth.cfg.url,
                auth.tokens,
                oauth.client_id,
                oauth.client_secret,
                token_endpoint_auth_method=oauth.token_auth,
                scope=oauth.scope,
                issuer=oauth.issuer,
            )
        self._manage(auth, person=False)

    async def _renewal(self) -> httpx2.Request | None:
        ctx = self.context
        if ctx.current_tokens is not None and not ctx.is_token_valid() and ctx.oauth_metadata is not None:
            return await self._exchange_token_client_credentials()
        return None


def build_provider(
    auth: ServerAuth,
    *,
    redirect_uri: str | None = None,
    show_link: Callable[[str], Awaitable[None]] | None = None,
    wait_callback: Callable[[], Awaitable[Any]] | None = None,
) -> _Managed:
    """The server's SDK provider: unattended (the gateway) unless `show_link` is given (a person's login)."""
    if auth.oauth.grant == "client_credentials":
        return MachineProvider(auth)
    return PersonProvider(auth, redirect_uri, show_link, wait_callback)


def provider_of(auth: ServerAuth) -> _Managed:
    """The SDK's OAuth client of the gateway's connections to the server (unattended), made once."""
    if auth.provider is None:
        auth.provider = build_provider(auth)
    provider: _Managed = auth.provider
    return provider
