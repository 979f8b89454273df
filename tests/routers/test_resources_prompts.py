"""Servers' resources and prompts through the gateway, against @modelcontextprotocol/server-everything: the model
lists and reads resources with the built-in tools; prompts are listed and runs start from them; both within an API
key's server scope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import call, script
from tests.mock_lmstudio.fixture import MockLMStudio

pytestmark = pytest.mark.timeout(120)
ARCHITECTURE = "demo://resource/static/document/architecture.md"
FULL_KEY, TIME_KEY = "full-key-0000000000000001", "time-key-0000000000000002"
FULL, TIME_ONLY = ({"Authorization": f"Bearer {k}"} for k in (FULL_KEY, TIME_KEY))


@pytest.fixture(scope="module")
def gateway_settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path: Path = tmp_path_factory.mktemp("keys") / "keys.yaml"
    keys = [{"name": "full", "key": FULL_KEY}, {"name": "clock", "key": TIME_KEY, "servers": ["time"]}]
    path.write_text(yaml.safe_dump({"keys": keys}))
    return {"keys_file": str(path)}


async def test_the_model_lists_and_reads_resources(bridge: httpx.AsyncClient, mock: MockLMStudio) -> None:
    rounds = [
        [call("bridge__list_resources", {"server": "everything"})],
        [call("bridge__read_resource", {"server": "everything", "uri": ARCHITECTURE})],
    ]
    task = "Read the architecture document. " + script(calls=rounds)
    response = await bridge.post("/v1/autonomous", json={"task": task, "mcp_servers": ["everything"]}, headers=FULL)
    assert response.status_code == 200, response.text
    listed, read = response.json()["steps"]
    assert ARCHITECTURE in listed["output"] and not listed["is_error"]
    assert "Architecture" in read["output"] and not read["is_error"]
    first = (await mock.chat_requests())[0]["body"]
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert offered["bridge__read_resource"]["parameters"]["properties"]["server"]["enum"] == ["everything"]


async def test_resource_tools_only_for_servers_with_resources(bridge: httpx.AsyncClient, mock: MockLMStudio) -> None:
    task = "Time? " + script(calls=[[call("bridge__list_resources", {})]])
    response = await bridge.post("/v1/autonomous", json={"task": task, "mcp_servers": ["time"]}, headers=FULL)
    assert response.status_code == 200, response.text
    [step] = response.json()["steps"]
    assert step["is_error"] and "no tool named 'bridge__list_resources'" in step["output"]
    first = (await mock.chat_requests())[0]["body"]
    assert not any(t["function"]["name"].startswith("bridge__") for t in first["tools"])


async def test_a_bad_uri_reaches_the_model_as_an_error(bridge: httpx.AsyncClient, mock: MockLMStudio) -> None:
    task = "Read. " + script(calls=[[call("bridge__read_resource", {"server": "everything", "uri": "demo://nope"})]])
    response = await bridge.post("/v1/autonomous", json={"task": task, "mcp_servers": ["everything"]}, headers=FULL)
    [step] = response.json()["steps"]
    assert step["is_error"] and step["output"].startswith("Error: MCP server 'everything' refused resources/read")


async def test_prompts_are_listed(bridge: httpx.AsyncClient) -> None:
    response = await bridge.get("/v1/prompts", params={"server": "everything"}, headers=FULL)
    assert response.status_code == 200, response.text
    prompts = {p["name"]: p for p in response.json()["data"]}
    assert {"simple-prompt", "args-prompt"} <= set(prompts)
    args = {a["name"]: a for a in prompts["args-prompt"]["arguments"]}
    assert args["city"]["required"] is True and args["state"]["required"] is False
    assert prompts["args-prompt"]["server"] == "everything"
    everything = await bridge.get("/v1/prompts", headers=FULL)
    assert "args-prompt" in {p["name"] for p in everything.json()["data"] if p["server"] == "everything"}


async def test_a_run_starts_from_a_prompt(bridge: httpx.AsyncClient, mock: MockLMStudio) -> None:
    response = await bridge.post(
        "/v1/prompts/everything/args-prompt/run", json={"arguments": {"city": "Paris"}}, headers=FULL
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "completed" and result["mcp_servers"] == ["everything"]
    messages = (await mock.chat_requests())[0]["body"]["messages"]
    assert messages[0]["role"] == "system"
    assert messages[1]["role"] == "user" and "Paris" in messages[1]["content"]


async def test_prompt_errors(bridge: httpx.AsyncClient) -> None:
    missing = await bridge.post("/v1/prompts/everything/no-such-prompt/run", json={}, headers=FULL)
    assert missing.status_code == 422 and missing.json()["code"] == "mcp_request_failed"
    unknown = await bridge.post("/v1/prompts/nowhere/x/run", json={}, headers=FULL)
    assert unknown.status_code == 404


async def test_the_key_scope_applies(bridge: httpx.AsyncClient, mock: MockLMStudio) -> None:
    listed = await bridge.get("/v1/prompts", headers=TIME_ONLY)
    assert listed.status_code == 200 and {p["server"] for p in listed.json()["data"]} <= {"time"}
    assert (await bridge.get("/v1/prompts", params={"server": "everything"}, headers=TIME_ONLY)).status_code == 403
    run = await bridge.post("/v1/prompts/everything/simple-prompt/run", json={}, headers=TIME_ONLY)
    assert run.status_code == 403
    task = "x " + script(calls=[[call("bridge__list_resources", {})]])
    refused = await bridge.post("/v1/autonomous", json={"task": task, "mcp_servers": ["everything"]}, headers=TIME_ONLY)
    assert refused.status_code == 403
