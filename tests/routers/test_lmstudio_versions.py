"""The gateway against current LM Studio and an older one (the mock's `lmstudio` option): a model gone after the
catalog cached it, no model loaded, instance ids, both load answers, reasoning and text beside tool calls passed
through untouched, JIT loads noticed, and the LM Studio token sent on every kind of call."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import app_client, make_settings
from tests.helpers import call, script
from tests.mock_lmstudio.fixture import MockLMStudio

pytestmark = pytest.mark.timeout(120)
TOKEN = "lm-studio-token-123"
QWEN = "qwen/qwen3-4b"
CODER = "qwen/qwen3-coder-30b"
MAGISTRAL = "mistralai/magistral-small-2509"
OTHER = "other/model-7b"
CHAT = "/v1/chat/completions"
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def model(key: str, loaded: bool = False, **extra: Any) -> dict[str, Any]:
    """A model entry in the mock's `--models` format."""
    return {"id": key, "type": "llm", "loaded": loaded, "max_context_length": 8192, "tool_use": True, **extra}


@pytest.fixture
async def gateway(mock: MockLMStudio, mcp_json: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A fresh gateway (its own model catalog) on the shared mock, with an LM Studio token."""
    settings = make_settings(lmstudio_base_url=mock.base_url, mcp_config=str(mcp_json), lmstudio_api_token=TOKEN)
    async with app_client(settings, timeout=60) as client:
        yield client


async def states(gateway: httpx.AsyncClient) -> dict[str, str]:
    return {m["id"]: m["state"] for m in (await gateway.get("/v1/models")).json()["data"]}


def ask(target: str, version: str) -> tuple[str, dict[str, Any]]:
    """The request of each path that sends `model` to LM Studio: a run, the pass-through (JSON and stream), MCP."""
    messages = [{"role": "user", "content": f"hi from {version}"}]
    if target == "run":
        return "/v1/autonomous", {"task": "hi", "model": CODER, "mcp_servers": []}
    if target == "mcp":
        return CHAT, {"model": CODER, "messages": messages, "mcp_servers": ["time"]}
    return CHAT, {"model": CODER, "messages": messages, "stream": target == "stream"}


@pytest.mark.parametrize("version", ["current", "0.3"])
@pytest.mark.parametrize("target", ["run", "passthrough", "stream", "mcp"])
async def test_model_gone_after_caching_is_422_with_the_fresh_list(
    gateway: httpx.AsyncClient, mock: MockLMStudio, version: str, target: str
) -> None:
    assert CODER in await states(gateway)  # the catalog has cached it
    await mock.configure(lmstudio=version, models=[model(QWEN, loaded=True), model(OTHER)])
    path, body = ask(target, version)
    response = await gateway.post(path, json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "model_not_found" and problem["model"] == CODER
    assert problem["available_models"] == [QWEN, OTHER]  # the list after the refresh, not the cached one
    [sent] = [r for r in await mock.requests() if r["path"] == CHAT]
    assert sent["status"] == (400 if version == "current" else 404)  # LM Studio said so, in its version's words
    assert await states(gateway) == {QWEN: "loaded", OTHER: "not-loaded"}  # refreshed once: no further listing
    assert len([r for r in await mock.requests() if r["path"].endswith("/models")]) == 2


@pytest.mark.parametrize(
    ("path", "body"),
    [(CHAT, {"messages": [{"role": "user", "content": "hi"}]}), ("/v1/autonomous", {"task": "hi", "mcp_servers": []})],
)
async def test_no_model_loaded_is_a_clear_problem(
    gateway: httpx.AsyncClient, mock: MockLMStudio, path: str, body: dict[str, Any]
) -> None:
    await mock.configure(jit=False, models=[model(QWEN), model(CODER)])
    response = await gateway.post(path, json={**body, "model": CODER})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "no_model_loaded" and problem["model"] == CODER
    assert f"POST /v1/models/{CODER}/load" in problem["detail"]
    assert problem["load_endpoint"] == f"POST /v1/models/{CODER}/load"
    # the way out the problem names works
    assert (await gateway.post(f"/v1/models/{CODER}/load")).status_code == 200
    assert (await gateway.post(path, json={**body, "model": CODER})).status_code == 200


async def test_unload_uses_the_instance_id_from_the_listing(gateway: httpx.AsyncClient, mock: MockLMStudio) -> None:
    await mock.configure(models=[model(QWEN, loaded=True, instance_id=f"{QWEN}:2"), model(CODER)])
    assert (await states(gateway))[QWEN] == "loaded"
    response = await gateway.post(f"/v1/models/{QWEN}/unload")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "instance_id": f"{QWEN}:2",
        "instance_ids": [f"{QWEN}:2"],
        "status": "unloaded",
        "hosts": [mock.base_url],  # one host, named by its URL
    }
    unloads = [r["body"] for r in await mock.requests() if r["path"] == "/api/v1/models/unload"]
    assert unloads == [{"instance_id": f"{QWEN}:2"}]  # not the key: LM Studio would not find it
    assert (await states(gateway))[QWEN] == "not-loaded"  # the catalog was refreshed


@pytest.mark.parametrize("version", ["current", "0.3"])
async def test_both_load_answer_shapes(gateway: httpx.AsyncClient, mock: MockLMStudio, version: str) -> None:
    await mock.configure(lmstudio=version)
    assert (await states(gateway))[CODER] == "not-loaded"
    response = await gateway.post(f"/v1/models/{CODER}/load", json={"ttl": 600})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "type": "llm",
        "instance_id": CODER,
        "load_time_seconds": 0.1,
        "status": "loaded",
        "host": mock.base_url,
    }
    assert (await states(gateway))[CODER] == "loaded"


async def test_reasoning_and_text_beside_tool_calls_pass_through_untouched(
    gateway: httpx.AsyncClient, mock: MockLMStudio
) -> None:
    await mock.configure(separate_reasoning=True)
    spec = script(reasoning="The user wants weather.", say="Let me check.", calls=[[call("get_weather", {"c": 1})]])
    body = {"model": QWEN, "messages": [{"role": "user", "content": spec}], "tools": [TOOL]}
    via = (await gateway.post(CHAT, json=body)).json()
    direct = (await mock.client.post(CHAT, json=body)).json()
    message = via["choices"][0]["message"]
    assert message == direct["choices"][0]["message"]
    assert message["reasoning_content"] == "The user wants weather." and message["content"] == "Let me check."
    assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": json.dumps({"c": 1})}

    async with gateway.stream("POST", CHAT, json={**body, "stream": True}) as streamed:
        lines = [line async for line in streamed.aiter_lines() if line.startswith("data: {")]
    deltas = [json.loads(line[6:])["choices"][0]["delta"] for line in lines]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "The user wants weather."
    assert "".join(d.get("content") or "" for d in deltas) == "Let me check."
    assert any(d.get("tool_calls") for d in deltas)


async def test_catalog_notices_jit_loads_and_evictions(gateway: httpx.AsyncClient) -> None:
    assert (await states(gateway))[MAGISTRAL] == "not-loaded"  # cached
    run = await gateway.post("/v1/autonomous", json={"task": "hi", "model": MAGISTRAL, "mcp_servers": []})
    assert run.json()["status"] == "completed"
    assert (await states(gateway))[MAGISTRAL] == "loaded"  # LM Studio loaded it on demand
    await gateway.post("/v1/autonomous", json={"task": "hi", "model": CODER, "mcp_servers": []})
    now = await states(gateway)
    assert now[CODER] == "loaded" and now[MAGISTRAL] == "not-loaded"  # Auto-Evict
    assert now[QWEN] == "loaded"  # loaded by hand: not evicted


async def test_the_lmstudio_token_is_sent_on_every_kind_of_call(gateway: httpx.AsyncClient, mock: MockLMStudio) -> None:
    await gateway.get("/v1/models")
    await gateway.post(CHAT, json={"model": QWEN, "messages": [{"role": "user", "content": "hi"}]})
    async with gateway.stream(
        "POST", CHAT, json={"model": QWEN, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    ) as streamed:
        assert [line async for line in streamed.aiter_lines()][-2:] == ["data: [DONE]", ""]
    await gateway.post(f"/v1/models/{CODER}/load")
    seen = await mock.requests()
    kinds = {(r["path"], (r["body"] or {}).get("stream", False)) for r in seen}
    assert {("/api/v1/models", False), (CHAT, False), (CHAT, True), ("/api/v1/models/load", False)} <= kinds
    assert {r["headers"].get("authorization") for r in seen} == {f"Bearer {TOKEN}"}
