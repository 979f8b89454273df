"""OAuth's settings and edges: BRIDGE_TOKEN_KEY checked at start-up, a server with `bridge.oauth` disabled
without it, `lmstudio-bridge auth` refusing what it cannot do, tokens redacted by redactors built before them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from app.cli import main
from app.gateway import load_mcp_setup
from services.text import Redactor, learn_secret
from tests.conftest import make_settings, store_url

REMOTE = {
    "mcpServers": {"remote": {"url": "http://127.0.0.1:9/mcp", "bridge": {"oauth": {}}}, "local": {"command": "x"}}
}


def test_a_token_key_that_is_no_fernet_key_stops_start_up() -> None:
    with pytest.raises(ValidationError) as raised:
        make_settings(token_key="not-a-key")
    assert "BRIDGE_TOKEN_KEY" in str(raised.value) or "token_key" in str(raised.value)
    assert "Fernet" in str(raised.value)
    two = [Fernet.generate_key().decode(), Fernet.generate_key().decode()]
    assert [k.get_secret_value() for k in make_settings(token_key=",".join(two)).token_key] == two


def test_without_a_token_key_an_oauth_server_is_disabled_saying_why(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(REMOTE))
    servers = load_mcp_setup(make_settings(mcp_config=str(path))).servers
    assert servers["remote"].disabled and "BRIDGE_TOKEN_KEY" in (servers["remote"].unusable or "")
    assert not servers["local"].disabled
    keyed = load_mcp_setup(make_settings(mcp_config=str(path), token_key=Fernet.generate_key().decode())).servers
    assert not keyed["remote"].disabled


def test_auth_refuses_what_it_cannot_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(REMOTE))
    monkeypatch.setenv("MCP_CONFIG", str(path))
    monkeypatch.setenv("BRIDGE_DATABASE_URL", store_url())
    assert main(["auth", "remote"]) == 2
    assert "BRIDGE_TOKEN_KEY is not set" in capsys.readouterr().err
    monkeypatch.setenv("BRIDGE_TOKEN_KEY", Fernet.generate_key().decode())
    assert main(["auth", "nope"]) == 2
    assert "no MCP server 'nope' in mcp.json (servers: remote, local)" in capsys.readouterr().err
    assert main(["auth", "local"]) == 2
    assert "has no OAuth settings" in capsys.readouterr().err


def test_a_token_learned_later_is_redacted_by_redactors_built_before() -> None:
    redact = Redactor(["api-key-1"])
    token = "tok-" + Fernet.generate_key().decode()[:20]
    assert redact(f"token {token}") == f"token {token}"
    learn_secret(token)
    assert redact(f'{{"access_token": "{token}"}}') == '{"access_token": "[REDACTED]"}'
    assert Redactor()(token) == "[REDACTED]"


def test_the_token_key_is_a_secret_of_the_logs() -> None:
    from app.telemetry import secrets_of

    key = Fernet.generate_key().decode()
    assert key in secrets_of(make_settings(token_key=key), [])
