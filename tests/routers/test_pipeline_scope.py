"""A pipeline holds to its API key's scope (issue 29, item 1): every step's model is resolved within the
key's scope before anything runs (a default outside it is 403), `unload_after` is an admin's (403 before
step one otherwise), and the record and the `step.started` events name the model each step asked for.
REST and the MCP front door's `autonomous_pipeline` alike; against the mock LM Studio with two models loaded
and `DEFAULT_MODEL` unset.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import events_of, mcp_http_session, script
from tests.mock_lmstudio.fixture import MockLMStudio

pytestmark = pytest.mark.timeout(120)

CHAT, UNLOAD = "/v1/chat/completions", "/api/v1/models/unload"
QWEN, MISTRAL = "qwen/qwen3-4b", "mistralai/magistral-small-2509"
SMALL_KEY, BOSS_KEY = "small-key-000000000003", "boss-key-0000000000005"
SMALL, BOSS = ({"Authorization": f"Bearer {k}"} for k in (SMALL_KEY, BOSS_KEY))


@pytest.fixture(scope="module")
def gateway_settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    keys = tmp_path_factory.mktemp("keys") / "keys.yaml"
    entries = [
        {"name": "small", "key": SMALL_KEY, "models": [QWEN], "servers": ["time"]},
        {"name": "boss", "key": BOSS_KEY, "admin": True},
    ]
    keys.write_text(yaml.safe_dump({"keys": entries}))
    return {"keys_file": str(keys), "model_cache_ttl_s": 0}  # DEFAULT_MODEL unset


def llm(key: str, loaded: bool) -> dict[str, Any]:
    return {"id": key, "type": "llm", "loaded": loaded, "max_context_length": 8192, "tool_use": True}


async def work(mock: MockLMStudio) -> list[tuple[str, Any]]:
    """The calls that do something upstream: chats (their model) and unloads."""
    return [
        (r["path"], r["body"].get("model") if r["path"] == CHAT else r["body"])
        for r in await mock.requests()
        if r["path"] in (CHAT, UNLOAD) or r["path"].endswith("/load")
    ]


def forbidden(response: httpx.Response, step: int) -> dict[str, Any]:
    assert response.status_code == 403, response.text
    body = dict(response.json())
    assert body["code"] == "forbidden" and body["step"] == step, body
    return body


UNLOADING = {
    "task": "hello " + script(answer="one"),
    "steps": [{"name": "one", "model": QWEN, "unload_after": True}, {"name": "two"}],
}


async def test_unload_after_is_refused_to_a_key_that_is_no_admin(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    await mock.configure(models=[llm(QWEN, True), llm(MISTRAL, True)])
    body = forbidden(await live.post("/v1/pipelines", json=UNLOADING, headers=SMALL), 1)
    assert "unload" in body["detail"] and body["step_name"] == "one", body
    forbidden(await live.post("/v1/runs", json=UNLOADING, headers=SMALL), 1)
    async with mcp_http_session(live, **SMALL) as session:
        result = await session.call_tool("autonomous_pipeline", UNLOADING)
    assert result.is_error and result.structured_content is not None, result
    assert result.structured_content["code"] == "forbidden" and result.structured_content["step"] == 1
    assert await work(mock) == []  # nothing ran, nothing was unloaded


async def test_a_default_model_outside_the_scope_is_403_before_anything_runs(
    live: httpx.AsyncClient, mock: MockLMStudio
) -> None:
    await mock.configure(models=[llm(MISTRAL, True), llm(QWEN, True)])  # the default: the first loaded LLM
    body = {"task": "hello " + script(answer="one"), "steps": [{"name": "one", "model": QWEN}, {"name": "two"}]}
    refused = forbidden(await live.post("/v1/pipelines", json=body, headers=SMALL), 2)
    assert refused["refused_model"] == MISTRAL and refused["allowed_models"] == [QWEN], refused
    async with mcp_http_session(live, **SMALL) as session:
        result = await session.call_tool("autonomous_pipeline", body)
    assert result.is_error and result.structured_content is not None, result
    assert result.structured_content["code"] == "forbidden" and result.structured_content["step"] == 2
    assert await work(mock) == []


async def test_the_record_and_events_name_the_model_each_step_asked(
    live: httpx.AsyncClient, mock: MockLMStudio
) -> None:
    # an admin's step two takes the default; step one's unload makes the default another model than at the start
    await mock.configure(models=[llm(QWEN, True), llm(MISTRAL, True)])
    response = await live.post("/v1/pipelines", json=UNLOADING, headers=BOSS)
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["status"] == "completed", done
    assert [s["result"]["model"] for s in done["stages"]] == [QWEN, MISTRAL]
    assert await work(mock) == [(CHAT, QWEN), (UNLOAD, {"instance_id": QWEN}), (CHAT, MISTRAL)]
    events = await events_of(live, done["run_id"], headers=BOSS)
    assert [e.data["model"] for e in events if e.event == "step.started"] == [QWEN, MISTRAL]
    stored = (await live.get(f"/v1/runs/{done['run_id']}", headers=BOSS)).json()
    assert [s["result"]["model"] for s in stored["stages"]] == [QWEN, MISTRAL]
