"""Load and validate `mcp.json` (the format LM Studio, Claude Desktop and Cursor share)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PureWindowsPath
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from services.errors import MCPConfigError
from services.mcp.oauth_config import OAuthConfig, parse_oauth
from services.text import UnsetVariableError, expand_env

# "unknown": an entry whose `type` the gateway cannot use; it is kept, disabled, with `unusable` saying why
Transport = Literal["stdio", "http", "sse", "unknown"]

BRIDGE_COMMANDS = frozenset({"lmstudio-bridge", "lmstudio-bridge.exe"})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"})

_TYPE_ALIASES: dict[str, Transport] = {
    "stdio": "stdio",
    "http": "http",
    "streamable-http": "http",
    "streamablehttp": "http",
    "streamable_http": "http",
    "sse": "sse",  # the legacy HTTP+SSE transport (MCP 2024-11-05): the SDK's SSE client
}


@dataclass(frozen=True)
class MCPServerConfig:
    """One server entry of `mcp.json`, after validation and `${env:VAR}` expansion."""

    name: str
    transport: Transport
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, repr=False)
    cwd: str | None = None
    url: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    disabled: bool = False
    timeout_s: float | None = None
    allowed_tools: frozenset[str] | None = None
    disabled_tools: frozenset[str] = frozenset()
    is_bridge: bool = False  # lmstudio-bridge itself: skipped (recursion guard)
    approval_tools: tuple[str, ...] = ()  # `bridge.approval_tools`: globs of this server's tools a person approves
    tool_timeouts: Mapping[str, float] = field(default_factory=dict)  # `bridge.tool_timeouts`: seconds per tool
    oauth: OAuthConfig | None = None  # `bridge.oauth`: a remote server reached with OAuth 2.1 tokens
    unusable: str | None = None  # why the gateway cannot use the entry (it is disabled); None for a usable one

    def describe(self) -> dict[str, Any]:
        """A secret-free summary: env and header NAMES only, URL without credentials or query."""
        return {
            "name": self.name,
            "transport": self.transport,
            "command": self.command,
            "args": list(self.args),
            "cwd": self.cwd,
            "url": safe_url(self.url),
            "env": sorted(self.env),
            "headers": sorted(self.headers),
            "disabled": self.disabled,
            "timeout_s": self.timeout_s,
            "allowed_tools": sorted(self.allowed_tools) if self.allowed_tools is not None else None,
            "disabled_tools": sorted(self.disabled_tools),
            "approval_tools": list(self.approval_tools),
            "tool_timeouts": dict(self.tool_timeouts),
            "oauth": self.oauth.describe() if self.oauth else None,
            "unusable": self.unusable,
        }

    def tool_allowed(self, tool: str) -> bool:
        """Whether `allowedTools` / `disabledTools` let the model see and call `tool`."""
        if self.allowed_tools is not None and tool not in self.allowed_tools:
            return False
        return tool not in self.disabled_tools


def safe_url(url: str | None) -> str | None:
    """The URL without user info, query string or fragment (they may carry secrets)."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "<invalid url>"


def is_bridge_entry(cfg: MCPServerConfig, host: str, port: int) -> bool:
    """Whether the entry runs `lmstudio-bridge mcp` or points at this gateway's own `/mcp` on host:port."""
    if cfg.transport == "stdio":
        argv = [cfg.command or "", *cfg.args]
        return any(
            (PureWindowsPath(arg).name in BRIDGE_COMMANDS and argv[i + 1 : i + 2] == ["mcp"])
            or argv[i : i + 3] == ["-m", "app.cli", "mcp"]
            for i, arg in enumerate(argv)
        )
    try:
        parts = urlsplit(cfg.url or "")
        url_port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    local = parts.hostname in LOOPBACK_HOSTS | {host.lower()}
    return local and url_port == port and parts.path.rstrip("/") == "/mcp"


def guard_recursion(servers: dict[str, MCPServerConfig], host: str, port: int) -> dict[str, MCPServerConfig]:
    """The servers with every entry that is lmstudio-bridge itself marked `is_bridge` and disabled."""
    return {
        name: replace(cfg, is_bridge=True, disabled=True) if is_bridge_entry(cfg, host, port) else cfg
        for name, cfg in servers.items()
    }


def find_config_path(explicit: str | None, cwd: Path, home: Path) -> Path | None:
    """The explicit path (must exist), else `cwd/mcp.json`, else `home/.lmstudio/mcp.json`, else None."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise MCPConfigError(f"MCP config file {explicit!r} (MCP_CONFIG / MCP_JSON_PATH) does not exist")
        return path
    for candidate in (cwd / "mcp.json", home / ".lmstudio" / "mcp.json"):
        if candidate.is_file():
            return candidate
    return None


class _Ctx:
    """Builds error messages naming the file, the server and the field."""

    def __init__(self, file: str, server: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.server = server
        self.environ = environ

    def error(self, fld: str, problem: str) -> MCPConfigError:
        return MCPConfigError(f'{self.file}: server "{self.server}": field "{fld}" {problem}')

    def expand(self, fld: str, value: str) -> str:
        try:
            return expand_env(value, self.environ)
        except UnsetVariableError as exc:
            raise self.error(fld, f"${{env:{exc.name}}} refers to an unset environment variable") from None

    def opt_str(self, raw: Mapping[str, Any], fld: str) -> str | None:
        value = raw.get(fld)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(fld, "must be a string")
        return self.expand(fld, value)

    def str_list(self, raw: Mapping[str, Any], fld: str) -> list[str] | None:
        value = raw.get(fld)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(fld, "must be a list of strings")
        return [str(v) for v in value]

    def str_map(self, raw: Mapping[str, Any], fld: str) -> dict[str, str]:
        value = raw.get(fld)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise self.error(fld, "must be an object mapping names to strings")
        return {k: self.expand(f"{fld}.{k}", v) for k, v in value.items()}


class _UnknownTransport(MCPConfigError):
    """The entry's `type` names a transport the gateway does not have: the entry is disabled, not fatal."""


def _declared_transport(ctx: _Ctx, raw: Mapping[str, Any]) -> Transport | None:
    """The transport named by `type` (or `transport`), None when neither is given."""
    type_key = "type" if "type" in raw else "transport"
    raw_type = raw.get(type_key)
    if raw_type is None:
        return None
    if not isinstance(raw_type, str):
        raise ctx.error(type_key, "must be a string")
    transport = _TYPE_ALIASES.get(raw_type.lower())
    if transport is None:
        known = '"stdio", "streamable-http" (or "http") or "sse"'
        raise _UnknownTransport(str(ctx.error(type_key, f"has unknown value {raw_type!r} (known: {known})")))
    return transport


def is_sse_url(url: str) -> bool:
    """A URL whose path ends in `/sse`: the usual endpoint of a legacy HTTP+SSE server."""
    try:
        return urlsplit(url).path.rstrip("/").endswith("/sse")
    except ValueError:
        return False


def _resolve_transport(ctx: _Ctx, declared: Transport | None, command: str | None, url: str | None) -> Transport:
    """The declared transport, else the one `command` or `url` implies (a URL ending in `/sse` is a legacy
    SSE server); checks it has what it needs."""
    transport = declared or ("stdio" if command else ("sse" if is_sse_url(url) else "http") if url else None)
    if transport is None:
        raise ctx.error("command", 'or "url" is required')
    if transport == "stdio" and not command:
        raise ctx.error("command", "is required for a stdio server")
    if transport in ("http", "sse"):
        if not url:
            raise ctx.error("url", f"is required for an {'SSE' if transport == 'sse' else 'HTTP'} server")
        if not url.startswith(("http://", "https://")):
            raise ctx.error("url", "must start with http:// or https://")
    return transport


def _disabled(ctx: _Ctx, raw: Mapping[str, Any]) -> bool:
    disabled = raw.get("disabled", False)
    if not isinstance(disabled, bool):
        raise ctx.error("disabled", "must be true or false")
    return disabled


def _timeout_s(ctx: _Ctx, raw: Mapping[str, Any]) -> float | None:
    timeout = raw.get("timeout")
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ctx.error("timeout", "must be a number of seconds greater than 0")
    return float(timeout)


_BRIDGE_OPTIONS = ("approval_tools", "tool_timeouts", "oauth")


def _bridge_options(ctx: _Ctx, raw: Mapping[str, Any]) -> tuple[list[str], dict[str, float], OAuthConfig | None]:
    """The server's `bridge` object (other readers of mcp.json ignore it): `approval_tools` globs,
    `tool_timeouts` (seconds per tool name) and `oauth` (services/mcp/oauth_config.py)."""
    options = raw.get("bridge")
    if options is None:
        return [], {}, None
    if not isinstance(options, dict):
        raise ctx.error("bridge", "must be an object")
    unknown = sorted(set(options) - set(_BRIDGE_OPTIONS))
    if unknown:
        raise ctx.error(f"bridge.{unknown[0]}", f"is not a known option (known: {', '.join(_BRIDGE_OPTIONS)})")
    globs = options.get("approval_tools", [])
    if not isinstance(globs, list) or not all(isinstance(g, str) for g in globs):
        raise ctx.error("bridge.approval_tools", "must be a list of strings")
    timeouts = options.get("tool_timeouts", {})
    if not isinstance(timeouts, dict):
        raise ctx.error("bridge.tool_timeouts", "must be an object mapping tool names to seconds")
    for tool, seconds in timeouts.items():
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise ctx.error(f"bridge.tool_timeouts.{tool}", "must be a number of seconds greater than 0")
    oauth = parse_oauth(options["oauth"], ctx.error, ctx.expand) if "oauth" in options else None
    return globs, {tool: float(seconds) for tool, seconds in timeouts.items()}, oauth


def _parse_server(file: str, name: str, raw: Any, environ: Mapping[str, str]) -> MCPServerConfig:
    ctx = _Ctx(file, name, environ)
    if not isinstance(raw, dict):
        raise MCPConfigError(f'{file}: server "{name}" must be an object')

    # fields are checked in this order, so the first problem reported does not change
    try:
        declared = _declared_transport(ctx, raw)
    except _UnknownTransport as exc:  # kept, disabled: the other servers still start
        return MCPServerConfig(name=name, transport="unknown", disabled=True, unusable=str(exc))
    command = ctx.opt_str(raw, "command")
    url = ctx.opt_str(raw, "url")
    args = [ctx.expand("args", a) for a in ctx.str_list(raw, "args") or []]
    env = ctx.str_map(raw, "env")
    headers = ctx.str_map(raw, "headers")
    cwd = ctx.opt_str(raw, "cwd")
    transport = _resolve_transport(ctx, declared, command, url)
    disabled = _disabled(ctx, raw)
    timeout_s = _timeout_s(ctx, raw)
    allowed = ctx.str_list(raw, "allowedTools")
    disabled_tools = ctx.str_list(raw, "disabledTools") or []
    approval_tools, tool_timeouts, oauth = _bridge_options(ctx, raw)
    if oauth is not None and transport != "http":
        raise ctx.error("bridge.oauth", "is for remote servers over streamable HTTP only")

    stdio = transport == "stdio"
    return MCPServerConfig(
        name=name,
        transport=transport,
        command=command if stdio else None,
        args=tuple(args) if stdio else (),
        env=env,
        cwd=cwd,
        url=url if transport in ("http", "sse") else None,
        headers=headers,
        disabled=disabled,
        timeout_s=timeout_s,
        allowed_tools=frozenset(allowed) if allowed is not None else None,
        disabled_tools=frozenset(disabled_tools),
        approval_tools=tuple(approval_tools),
        tool_timeouts=tool_timeouts,
        oauth=oauth,
    )


def load_mcp_config(path: Path | None, environ: Mapping[str, str]) -> dict[str, MCPServerConfig]:
    """Parse `mcp.json` into server configs (config order); any problem raises MCPConfigError."""
    if path is None:
        return {}
    file = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MCPConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MCPConfigError(f"{file} is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise MCPConfigError(f'{file}: the top level must be an object with "mcpServers"')
    servers = data.get("mcpServers", {})
    if not isinstance(servers, dict):
        raise MCPConfigError(f'{file}: "mcpServers" must be an object mapping names to servers')
    result: dict[str, MCPServerConfig] = {}
    for name, raw in servers.items():
        if not name.strip():
            raise MCPConfigError(f'{file}: "mcpServers" has a server with an empty name')
        result[name] = _parse_server(file, name, raw, environ)
    return result
