"""mcp.json loading: shapes, ${env:VAR} expansion, clear errors, lookup order, no secrets in repr."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.errors import MCPConfigError
from services.mcp import MCPServerConfig, find_config_path, guard_recursion, is_bridge_entry, load_mcp_config


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "mcp.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def load(tmp_path: Path, servers: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, MCPServerConfig]:
    return load_mcp_config(write(tmp_path, {"mcpServers": servers}), environ or {})


def test_full_config(tmp_path: Path) -> None:
    env = {"HOME_DIR": "/home/u", "TOKEN": "t0k3n", "PORT": "8080"}
    servers = load(
        tmp_path,
        {
            "fs": {
                "command": "npx",
                "args": ["-y", "@modelcontextprotocol/server-filesystem", "${env:HOME_DIR}/docs"],
                "env": {"API_KEY": "key-${env:TOKEN}"},
                "cwd": "${env:HOME_DIR}",
                "timeout": 12,
                "allowedTools": ["read_text_file", "list_directory"],
                "disabledTools": ["list_directory"],
            },
            "web": {
                "type": "streamable-http",
                "url": "http://localhost:${env:PORT}/mcp",
                "headers": {"Authorization": "Bearer ${env:TOKEN}"},
            },
            "web2": {"type": "streamableHttp", "url": "https://example.com/mcp"},
            "off": {"command": "x", "disabled": True},
        },
        env,
    )
    assert list(servers) == ["fs", "web", "web2", "off"]
    fs = servers["fs"]
    assert fs.transport == "stdio"
    assert fs.args == ("-y", "@modelcontextprotocol/server-filesystem", "/home/u/docs")
    assert fs.env == {"API_KEY": "key-t0k3n"}
    assert fs.cwd == "/home/u"
    assert fs.timeout_s == 12.0
    assert fs.allowed_tools == frozenset({"read_text_file", "list_directory"})
    assert fs.tool_allowed("read_text_file")
    assert not fs.tool_allowed("list_directory")
    assert not fs.tool_allowed("write_file")
    web = servers["web"]
    assert web.transport == "http"
    assert web.url == "http://localhost:8080/mcp"
    assert web.headers == {"Authorization": "Bearer t0k3n"}
    assert servers["web2"].transport == "http"
    assert servers["off"].disabled
    # secrets never show in repr or describe()
    for cfg in servers.values():
        assert "t0k3n" not in repr(cfg)
        assert "t0k3n" not in json.dumps(cfg.describe())
    assert fs.describe()["env"] == ["API_KEY"]
    assert web.describe()["headers"] == ["Authorization"]


def test_tool_timeouts(tmp_path: Path) -> None:
    servers = load(tmp_path, {"web": {"command": "x", "timeout": 30, "bridge": {"tool_timeouts": {"fetch": 120}}}})
    assert servers["web"].tool_timeouts == {"fetch": 120.0}
    assert servers["web"].timeout_s == 30.0
    assert servers["web"].describe()["tool_timeouts"] == {"fetch": 120.0}


def test_oauth_settings(tmp_path: Path) -> None:
    oauth = {"grant": "client_credentials", "client_id": "gw", "client_secret": "${env:SECRET}", "scopes": "a b"}
    servers = load(tmp_path, {"remote": {"url": "https://h/mcp", "bridge": {"oauth": oauth}}}, {"SECRET": "s3cret!"})
    cfg = servers["remote"].oauth
    assert cfg is not None and cfg.client_secret == "s3cret!" and cfg.scopes == ("a", "b") and cfg.scope == "a b"
    assert "s3cret!" not in repr(servers["remote"]) and "s3cret!" not in json.dumps(servers["remote"].describe())
    assert servers["remote"].describe()["oauth"] == {
        "grant": "client_credentials",
        "client_id": "gw",
        "scopes": ["a", "b"],
        "issuer": None,
    }
    person = load(tmp_path, {"r": {"url": "https://h/mcp", "bridge": {"oauth": {}}}})["r"].oauth
    assert person is not None and person.grant == "authorization_code" and person.client_id is None


def test_url_credentials_and_query_hidden(tmp_path: Path) -> None:
    cfg = load(tmp_path, {"w": {"url": "https://user:pw@host:9000/mcp?key=abc#x"}})["w"]
    assert cfg.describe()["url"] == "https://host:9000/mcp"
    assert "pw" not in repr(cfg)


def test_none_path_is_empty() -> None:
    assert load_mcp_config(None, {}) == {}


def test_empty_servers(tmp_path: Path) -> None:
    assert load_mcp_config(write(tmp_path, {"mcpServers": {}}), {}) == {}
    assert load_mcp_config(write(tmp_path, {}), {}) == {}


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        ({"fs": {"args": ["a"]}}, 'mcp.json: server "fs": field "command" or "url" is required'),
        ({"fs": {"command": "x", "args": "a b"}}, 'mcp.json: server "fs": field "args" must be a list of strings'),
        ({"fs": {"command": "x", "args": [1, 2]}}, 'mcp.json: server "fs": field "args" must be a list of strings'),
        ({"fs": {"command": 5}}, 'mcp.json: server "fs": field "command" must be a string'),
        ({"fs": {"command": "x", "env": {"A": 1}}}, 'mcp.json: server "fs": field "env" must be an object'),
        ({"fs": {"command": "x", "env": ["A=1"]}}, 'mcp.json: server "fs": field "env" must be an object'),
        ({"fs": {"command": "x", "disabled": "yes"}}, 'mcp.json: server "fs": field "disabled" must be true or false'),
        ({"fs": {"command": "x", "timeout": 0}}, 'mcp.json: server "fs": field "timeout" must be a number'),
        ({"fs": {"command": "x", "timeout": "5"}}, 'mcp.json: server "fs": field "timeout" must be a number'),
        ({"fs": {"command": "x", "allowedTools": "read"}}, 'server "fs": field "allowedTools" must be a list'),
        ({"fs": {"command": "x", "disabledTools": [1]}}, 'server "fs": field "disabledTools" must be a list'),
        ({"w": {"url": "http://h", "headers": {"A": 1}}}, 'mcp.json: server "w": field "headers" must be an object'),
        ({"w": {"url": "ftp://h"}}, 'mcp.json: server "w": field "url" must start with http'),
        ({"w": {"type": "sse"}}, 'mcp.json: server "w": field "url" is required for an SSE server'),
        ({"w": {"type": "sse", "url": "ws://h/sse"}}, 'mcp.json: server "w": field "url" must start with http'),
        ({"w": {"type": 3, "url": "http://h"}}, 'mcp.json: server "w": field "type" must be a string'),
        ({"w": {"type": "http"}}, 'mcp.json: server "w": field "url" is required'),
        ({"w": {"type": "stdio", "url": "http://h"}}, 'mcp.json: server "w": field "command" is required'),
        ({"fs": "npx"}, 'mcp.json: server "fs" must be an object'),
        (
            {"fs": {"command": "x", "bridge": {"tool_timeouts": {"fetch": 0}}}},
            'server "fs": field "bridge.tool_timeouts.fetch" must be a number of seconds greater than 0',
        ),
        (
            {"fs": {"command": "x", "bridge": {"tool_timeouts": {"fetch": "120"}}}},
            'server "fs": field "bridge.tool_timeouts.fetch" must be a number of seconds',
        ),
        (
            {"fs": {"command": "x", "bridge": {"tool_timeouts": [120]}}},
            'server "fs": field "bridge.tool_timeouts" must be an object mapping tool names to seconds',
        ),
        (
            {"fs": {"command": "x", "bridge": {"timeouts": {}}}},
            'field "bridge.timeouts" is not a known option (known: approval_tools, tool_timeouts, oauth)',
        ),
        ({"": {"command": "x"}}, "empty name"),
        (
            {"fs": {"command": "x", "bridge": {"oauth": {}}}},
            'server "fs": field "bridge.oauth" is for remote servers over streamable HTTP only',
        ),
        ({"w": {"url": "http://h/mcp", "bridge": {"oauth": []}}}, 'field "bridge.oauth" must be an object'),
        (
            {"w": {"url": "http://h/mcp", "bridge": {"oauth": {"grant": "password"}}}},
            'field "bridge.oauth.grant" must be one of authorization_code, client_credentials',
        ),
        (
            {"w": {"url": "http://h/mcp", "bridge": {"oauth": {"grant": "client_credentials", "client_id": "a"}}}},
            'field "bridge.oauth" needs "client_id" and "client_secret" for the client_credentials grant',
        ),
        (
            {"w": {"url": "http://h/mcp", "bridge": {"oauth": {"scopes": [1]}}}},
            'field "bridge.oauth.scopes" must be a list of scope names',
        ),
        (
            {"w": {"url": "http://h/mcp", "bridge": {"oauth": {"client_secret": "${env:NOPE}", "client_id": "a"}}}},
            'field "bridge.oauth.client_secret" ${env:NOPE} refers to an unset environment variable',
        ),
        (
            {"w": {"url": "http://h/mcp", "bridge": {"oauth": {"redirect_port": 70000}}}},
            'field "bridge.oauth.redirect_port" must be a port number',
        ),
        (
            {"w": {"url": "http://h/mcp", "bridge": {"oauth": {"audience": "x"}}}},
            'field "bridge.oauth.audience" is not a known option',
        ),
        (
            {"fs": {"command": "x", "args": ["${env:NOPE}"]}},
            'mcp.json: server "fs": field "args" ${env:NOPE} refers to an unset environment variable',
        ),
        (
            {"w": {"url": "http://h", "headers": {"Authorization": "Bearer ${env:NOPE}"}}},
            'server "w": field "headers.Authorization" ${env:NOPE} refers to an unset environment variable',
        ),
    ],
)
def test_broken_configs(tmp_path: Path, servers: dict[str, Any], expected: str) -> None:
    with pytest.raises(MCPConfigError) as info:
        load(tmp_path, servers)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("entry", "transport"),
    [
        ({"type": "sse", "url": "http://h:9/events"}, "sse"),
        ({"type": "SSE", "url": "http://h:9/events"}, "sse"),
        ({"url": "http://h:9/sse"}, "sse"),  # LM Studio / Cursor style: only a URL, ending in /sse
        ({"url": "http://h:9/mcp/sse/"}, "sse"),
        ({"url": "http://h:9/mcp"}, "http"),
        ({"type": "streamable-http", "url": "http://h:9/sse"}, "http"),  # a declared type wins
    ],
)
def test_legacy_sse_servers_are_recognised(tmp_path: Path, entry: dict[str, Any], transport: str) -> None:
    cfg = load(tmp_path, {"w": entry})["w"]
    assert (cfg.transport, cfg.url, cfg.disabled, cfg.unusable) == (transport, entry["url"], False, None)


def test_an_unknown_type_disables_that_entry_only(tmp_path: Path) -> None:
    servers = load(tmp_path, {"w": {"type": "websocket", "url": "ws://h"}, "fs": {"command": "x"}})
    assert servers["fs"].disabled is False and servers["fs"].unusable is None
    w = servers["w"]
    assert (w.transport, w.disabled) == ("unknown", True)
    assert w.unusable == (
        'mcp.json: server "w": field "type" has unknown value \'websocket\' '
        '(known: "stdio", "streamable-http" (or "http") or "sse")'
    )


def test_not_json(tmp_path: Path) -> None:
    path = write(tmp_path, '{\n  "mcpServers": {\n    "fs": {command: "x"}\n  }\n}')
    with pytest.raises(MCPConfigError) as info:
        load_mcp_config(path, {})
    assert str(info.value).startswith("mcp.json is not valid JSON: line 3 column 12: ")


@pytest.mark.parametrize("data", [[], {"mcpServers": []}, {"mcpServers": "x"}])
def test_wrong_top_level(tmp_path: Path, data: Any) -> None:
    with pytest.raises(MCPConfigError, match=r"mcp\.json"):
        load_mcp_config(write(tmp_path, data), {})


def test_find_config_path_order(tmp_path: Path) -> None:
    cwd = tmp_path / "work"
    home = tmp_path / "home"
    (home / ".lmstudio").mkdir(parents=True)
    cwd.mkdir()
    assert find_config_path(None, cwd, home) is None
    (home / ".lmstudio" / "mcp.json").write_text("{}")
    assert find_config_path(None, cwd, home) == home / ".lmstudio" / "mcp.json"
    (cwd / "mcp.json").write_text("{}")
    assert find_config_path(None, cwd, home) == cwd / "mcp.json"
    explicit = tmp_path / "other.json"
    explicit.write_text("{}")
    assert find_config_path(str(explicit), cwd, home) == explicit
    with pytest.raises(MCPConfigError, match="does not exist"):
        find_config_path(str(tmp_path / "missing.json"), cwd, home)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"command": "/home/u/bridge/.venv/bin/lmstudio-bridge", "args": ["mcp"]}, True),
        ({"command": "C:\\bridge\\.venv\\Scripts\\lmstudio-bridge.exe", "args": ["mcp"]}, True),
        ({"command": "python3", "args": ["-m", "app.cli", "mcp"]}, True),
        ({"command": "uv", "args": ["run", "--directory", "/src/bridge", "lmstudio-bridge", "mcp"]}, True),
        ({"command": "lmstudio-bridge", "args": ["serve"]}, False),
        ({"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "mcp"]}, False),
        ({"command": "python3", "args": ["-m", "mcp_server_time"]}, False),
        ({"url": "http://localhost:8000/mcp"}, True),
        ({"url": "http://127.0.0.1:8000/mcp/"}, True),
        ({"url": "http://[::1]:8000/mcp"}, True),
        ({"url": "http://gateway.lan:8000/mcp"}, True),  # the host the gateway is bound to
        ({"url": "http://localhost:8001/mcp"}, False),
        ({"url": "http://localhost:8000/other/mcp"}, False),
        ({"url": "https://example.com:8000/mcp"}, False),
        ({"url": "http://localhost/mcp"}, False),
    ],
)
def test_is_bridge_entry(tmp_path: Path, entry: dict[str, Any], expected: bool) -> None:
    cfg = load(tmp_path, {"x": entry})["x"]
    assert is_bridge_entry(cfg, "gateway.lan", 8000) is expected


def test_guard_recursion_disables_only_the_bridge(tmp_path: Path) -> None:
    servers = load(
        tmp_path,
        {"time": {"command": "uvx", "args": ["mcp-server-time"]}, "me": {"url": "http://localhost:8000/mcp"}},
    )
    guarded = guard_recursion(servers, "127.0.0.1", 8000)
    assert guarded["time"] is servers["time"]
    assert guarded["me"].is_bridge and guarded["me"].disabled
    assert not servers["me"].is_bridge  # configs are frozen: the guard returns new ones
