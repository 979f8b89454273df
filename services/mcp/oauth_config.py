"""The `oauth` object of a server's `bridge` block in mcp.json: how the gateway gets tokens for a remote
(streamable HTTP) server that requires OAuth 2.1."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from services.errors import MCPConfigError

Grant = Literal["authorization_code", "client_credentials"]
GRANTS: tuple[Grant, ...] = ("authorization_code", "client_credentials")
TokenAuth = Literal["client_secret_basic", "client_secret_post"]
_OPTIONS = ("grant", "client_id", "client_secret", "scopes", "issuer", "redirect_port", "token_auth")


@dataclass(frozen=True)
class OAuthConfig:
    """OAuth settings of one remote server (`bridge.oauth`)."""

    grant: Grant = "authorization_code"  # a person logs in (`lmstudio-bridge auth`), or client credentials
    client_id: str | None = None  # None: the client registers itself at login (dynamic client registration)
    client_secret: str | None = field(default=None, repr=False)
    scopes: tuple[str, ...] = ()
    issuer: str | None = None  # the authorization server the client's credentials belong to
    redirect_port: int = 0  # the login's local callback port on 127.0.0.1 (0: any free port)
    token_auth: TokenAuth = "client_secret_basic"

    @property
    def scope(self) -> str | None:
        return " ".join(self.scopes) or None

    def describe(self) -> dict[str, Any]:
        """A secret-free summary (never the client secret)."""
        return {"grant": self.grant, "client_id": self.client_id, "scopes": list(self.scopes), "issuer": self.issuer}


def _choice(
    raw: Mapping[str, Any], name: str, choices: tuple[str, ...], error: Callable[[str, str], MCPConfigError]
) -> Any:
    value = raw.get(name, choices[0])
    if value not in choices:
        raise error(f"bridge.oauth.{name}", f"must be one of {', '.join(choices)}")
    return value


def _scopes(value: Any, error: Callable[[str, str], MCPConfigError]) -> list[str]:
    scopes = value.split() if isinstance(value, str) else value
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s and " " not in s for s in scopes):
        raise error("bridge.oauth.scopes", "must be a list of scope names (or one space-separated string)")
    return scopes


def parse_oauth(
    raw: Any, error: Callable[[str, str], MCPConfigError], expand: Callable[[str, str], str]
) -> OAuthConfig:
    """`bridge.oauth`, checked field by field (`error(field, problem)` names the field; `expand(field, text)`
    replaces `${env:VAR}`)."""
    if not isinstance(raw, Mapping):
        raise error("bridge.oauth", "must be an object")
    unknown = sorted(set(raw) - set(_OPTIONS))
    if unknown:
        raise error(f"bridge.oauth.{unknown[0]}", f"is not a known option (known: {', '.join(_OPTIONS)})")

    def text(name: str) -> str | None:
        value = raw.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise error(f"bridge.oauth.{name}", "must be a non-empty string")
        return expand(f"bridge.oauth.{name}", value)

    grant = _choice(raw, "grant", GRANTS, error)
    token_auth = _choice(raw, "token_auth", ("client_secret_basic", "client_secret_post"), error)
    scopes = _scopes(raw.get("scopes", []), error)
    port = raw.get("redirect_port", 0)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise error("bridge.oauth.redirect_port", "must be a port number (0: any free port)")
    issuer = text("issuer")
    if issuer is not None and not issuer.startswith(("http://", "https://")):
        raise error("bridge.oauth.issuer", "must start with http:// or https://")
    cfg = OAuthConfig(
        grant=grant,
        client_id=text("client_id"),
        client_secret=text("client_secret"),
        scopes=tuple(scopes),
        issuer=issuer,
        redirect_port=port,
        token_auth=token_auth,
    )
    if cfg.grant == "client_credentials" and not (cfg.client_id and cfg.client_secret):
        raise error("bridge.oauth", 'needs "client_id" and "client_secret" for the client_credentials grant')
    if cfg.client_secret and not cfg.client_id:
        raise error("bridge.oauth.client_secret", 'needs "client_id"')
    return cfg
