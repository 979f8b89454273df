"""API keys, limits, servers only from config, secrets hygiene, CORS."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psutil
import pytest

from app.cli import main as cli_main
from app.main import create_app
from app.server import is_loopback
from tests.conftest import app_client, make_settings
from tests.helpers import TIME_CALL, script
from tests.mock_lmstudio.fixture import MockLMStudio

KEY = "bridge-key-0123456789"
TOKEN = "lm-token-SECRET-4242"
ENV_SECRET = "env-value-SECRET-7777"
HEADER_SECRET = "header-value-SECRET-9999"
SECRETS = (KEY, TOKEN, ENV_SECRET, HEADER_SECRET)
SAMPLE = {
    "name": "time",
    "server": "time",
    "prompt": "greeting",
    "tool": "get_current_time",
    "model_id": "qwen/qwen3-4b",
    "run_id": "run_0",
    "eval_id": "eval_0",
    "tool_call_id": "call_0",
}


@pytest.fixture(scope="module")
def mcp_extra() -> dict[str, dict[str, Any]]:
    return {
        "remote": {"url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": f"Bearer {HEADER_SECRET}"}},
        "time": {"env": {"TIME_SECRET": ENV_SECRET}},
    }


@pytest.fixture(scope="module")
def gateway_settings() -> dict[str, Any]:
    return {"api_keys": f"{KEY},other-key", "lmstudio_api_token": TOKEN, "max_body_bytes": 4096}


def protected_routes() -> list[tuple[str, str]]:
    """Every /v1 operation of the app, from its OpenAPI document, with sample path values."""
    paths = create_app(make_settings(mcp_config=None)).openapi()["paths"]
    return [
        (method.upper(), re.sub(r"\{(\w+)\}", lambda m: SAMPLE[m.group(1)], path))
        for path, operations in paths.items()
        if path.startswith("/v1")
        for method in operations
    ]


ROUTES = protected_routes()


def test_every_v1_route_is_listed() -> None:
    assert ("GET", "/v1/models") in ROUTES and ("POST", "/v1/autonomous") in ROUTES
    assert ("POST", "/v1/chat/completions") in ROUTES and len(ROUTES) >= 14


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_missing_wrong_and_right_key(bridge: httpx.AsyncClient, method: str, path: str) -> None:
    missing = await bridge.request(method, path, json={})
    assert missing.status_code == 401
    assert missing.json()["code"] == "unauthorized"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = await bridge.request(method, path, json={}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = await bridge.request(method, path, json={}, headers={"Authorization": f"Bearer {KEY}"})
    assert right.status_code != 401
    second = await bridge.request(method, path, json={}, headers={"Authorization": "Bearer other-key"})
    assert second.status_code != 401


async def test_mcp_endpoint_needs_a_key(bridge: httpx.AsyncClient) -> None:
    assert (await bridge.post("/mcp", json={})).status_code == 401


async def test_health_and_readiness_stay_open(bridge: httpx.AsyncClient) -> None:
    assert (await bridge.get("/healthz")).status_code == 200
    assert (await bridge.get("/readyz")).status_code == 200  # no key needed (LM Studio, the mock, is up)


async def test_no_secret_in_bodies_or_logs(
    bridge: httpx.AsyncClient, mock: MockLMStudio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    auth = {"Authorization": f"Bearer {KEY}"}
    task = "Time? " + script(calls=[[TIME_CALL]])
    bodies = [
        await bridge.post("/v1/autonomous", json={"task": task, "mcp_servers": ["time"]}, headers=auth),
        await bridge.get("/v1/mcp/servers", headers=auth),
        await bridge.get("/v1/mcp/servers/remote/tools", headers=auth),
        await bridge.get("/readyz"),
        await bridge.post("/v1/autonomous", json={"task": "x", "model": "nope"}, headers=auth),
        await bridge.get("/v1/models", headers={"Authorization": "Bearer wrong"}),
    ]
    assert bodies[0].json()["status"] == "completed"
    servers = {s["name"]: s for s in bodies[1].json()["data"]}
    assert servers["time"]["env"] == ["TIME_SECRET"] and servers["remote"]["headers"] == ["Authorization"]
    seen = "\n".join(r.text + json.dumps(dict(r.headers)) for r in bodies) + caplog.text
    for secret in SECRETS:
        assert secret not in seen
    # the LM Studio token was really sent upstream (as a header, which the mock does not log)
    logged_upstream = json.dumps(await mock.requests())
    assert all(secret not in logged_upstream for secret in (KEY, ENV_SECRET, HEADER_SECRET))


async def test_oversized_body_is_413(bridge: httpx.AsyncClient) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    big = {"task": "x" * 5000}
    response = await bridge.post("/v1/autonomous", json=big, headers=auth)
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    chunked = await bridge.post("/v1/chat/completions", content=chunks(), headers=auth)
    assert chunked.status_code == 413


async def test_task_length_and_rounds_are_limited(bridge: httpx.AsyncClient) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    assert (await bridge.post("/v1/autonomous", json={"task": ""}, headers=auth)).status_code == 422
    too_many = await bridge.post("/v1/autonomous", json={"task": "x", "max_rounds": 101}, headers=auth)
    assert too_many.status_code == 422 and too_many.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    "body",
    [
        {"task": "x", "command": "/bin/sh"},
        {"task": "x", "mcp_servers": [{"command": "/bin/sh", "args": ["-c", "touch /tmp/pwned"]}]},
        {"task": "x", "mcp_servers": ["time"], "env": {"PATH": "/tmp"}},
        {"task": "x", "url": "http://evil.example/mcp"},
        {"mcp_name": "time", "task": "x", "cwd": "/"},
    ],
)
async def test_a_body_naming_a_command_does_nothing_but_422(bridge: httpx.AsyncClient, body: dict[str, Any]) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    path = "/v1/autonomous/with-mcp" if "mcp_name" in body else "/v1/autonomous"
    response = await bridge.post(path, json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 422 and response.json()["code"] == "validation_error"
    assert {p.pid for p in psutil.Process().children(recursive=True)} - before == set()


async def test_cors_is_off_by_default_and_configurable(mock: MockLMStudio) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with app_client(make_settings(lmstudio_base_url=mock.base_url)) as client:
        response = await client.options("/v1/autonomous", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    settings = make_settings(lmstudio_base_url=mock.base_url, cors_origins="https://app.example")
    async with app_client(settings) as client:
        response = await client.options("/v1/autonomous", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        other = await client.options("/v1/autonomous", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_require_auth_refuses_to_start_without_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BRIDGE_API_KEYS", raising=False)
    assert cli_main(["serve", "--require-auth", "--port", "1"]) == 2
    assert "BRIDGE_API_KEYS" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("192.168.1.5", False)],
)
def test_loopback_detection_for_the_warning(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
