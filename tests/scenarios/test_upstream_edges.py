"""Upstream edges of issue 29 (items 4, 8 and 12): transient failures of the model-list probes, the connect
timeout on every path, a dead host in the model list, a stream whose engine dies, the record of a run that
failed after a tool ran. Each case is listed in docs/reliability.md."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import app_client, make_settings
from tests.helpers import TIME_CALL, eventually, read_sse, script
from tests.mock_lmstudio.fixture import MockLMStudio, start_mock

QWEN, CODER = "qwen/qwen3-4b", "qwen/qwen3-coder-30b"
LISTING = "/api/v1/models"


# --- item 4: a 401 on a model-list probe is not "this API is missing" ----------------------------------


async def test_three_401s_on_the_probes_then_a_healthy_lmstudio_needs_no_restart(mock: MockLMStudio) -> None:
    unauthorized = {"kind": "status", "status": 401, "path": LISTING, "body": {"error": "Unauthorized"}}
    await mock.faults(unauthorized, unauthorized, unauthorized)
    async with app_client(make_settings(lmstudio_base_url=mock.base_url, model_cache_ttl_s=0)) as gateway:
        refused = [await gateway.get("/v1/models") for _ in range(3)]
        listed = await gateway.get("/v1/models")
        loaded = await gateway.post(f"/v1/models/{CODER}/load")
        after = await gateway.get("/v1/models")
    for answer in refused:  # the 401 said as it is, not a fallback to another API
        assert answer.status_code >= 400 and "401" in answer.json()["detail"], answer.text
    assert listed.status_code == 200, listed.text
    states = {m["id"]: m["state"] for m in listed.json()["data"]}
    assert states[QWEN] == "loaded" and states[CODER] == "not-loaded"  # the REST API's states, not OpenAI's list
    assert loaded.status_code == 200, loaded.text  # not 501 not_supported_by_lmstudio
    assert {m["id"]: m["state"] for m in after.json()["data"]}[CODER] == "loaded"
    paths = [r["path"] for r in await mock.requests() if r["method"] == "GET"]
    assert "/v1/models" not in paths and "/api/v0/models" not in paths, paths  # never fell back


# --- item 12, case 17: a host seen down shows its models unreachable at once -----------------------------

GEMMA = "google/gemma-3-4b"


def hosts_file(path: Path, **urls: str) -> str:
    path.write_text(json.dumps({"hosts": [{"name": name, "url": url} for name, url in urls.items()]}))
    return str(path)


@pytest.mark.parametrize("seen_by", ["readyz", "a call"])
async def test_a_host_seen_down_marks_its_models_unreachable_at_once(tmp_path: Path, seen_by: str) -> None:
    a, c = await asyncio.gather(start_mock(), start_mock())
    try:
        await a.configure(
            models=[{"id": QWEN, "type": "llm", "loaded": True, "max_context_length": 8192, "tool_use": True}]
        )
        await c.configure(
            models=[{"id": GEMMA, "type": "vlm", "loaded": True, "max_context_length": 8192, "tool_use": True}]
        )
        hosts = hosts_file(tmp_path / "hosts.json", a=a.base_url, c=c.base_url)
        settings = make_settings(lmstudio_hosts_file=hosts, model_cache_ttl_s=60, lmstudio_retries=0)
        async with app_client(settings) as gateway:
            before = {m["id"]: m for m in (await gateway.get("/v1/models")).json()["data"]}
            assert before[GEMMA]["state"] == "loaded"
            c.process.kill()
            await c.process.wait()
            if seen_by == "readyz":
                ready = (await gateway.get("/readyz")).json()
                assert [h["ok"] for h in ready["lmstudio"]["hosts"]] == [True, False], ready
            else:
                call = await gateway.post("/v1/autonomous", json={"task": "hi", "model": GEMMA, "mcp_servers": []})
                assert call.status_code == 503, call.text
            after = {m["id"]: m for m in (await gateway.get("/v1/models")).json()["data"]}  # within the 60 s cache
    finally:
        await asyncio.gather(a.stop(), c.stop())
    assert after[GEMMA]["hosts"] == [{"name": "c", "state": "unreachable", "loaded_context_length": None}]
    assert after[GEMMA]["state"] == "not-loaded" and after[GEMMA]["loaded_context_length"] is None
    assert after[QWEN]["state"] == "loaded" and after[QWEN]["hosts"][0]["state"] == "loaded"


# --- item 12, case 13: a run that fails after a tool ran keeps its steps -----------------------------------

CHAT = "/v1/chat/completions"
HERMES_CALL = '<tool_call>\n{"name": "time__get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}\n</tool_call>'


@pytest.mark.parametrize("how", ["background", "sync"])
@pytest.mark.parametrize("written", ["structured", "as text"])
async def test_a_run_failing_on_round_two_keeps_the_steps_that_ran(
    bridge: httpx.AsyncClient, mock: MockLMStudio, written: str, how: str
) -> None:
    """Round 1 calls the time tool (as a tool call, or as Hermes text the gateway recovers); the engine answers
    round 2 with a 400: the record says `failed` and keeps the step and the round (a background run, and a
    synchronous one, whose answer is the problem and whose record is in the store too)."""
    scripted = script(calls=[[TIME_CALL]]) if written == "structured" else script(answer=HERMES_CALL)
    rejected = {"kind": "status", "status": 400, "path": CHAT, "body": {"error": "Failed to parse input"}}
    await mock.faults({"kind": "delay", "ms": 0, "path": CHAT}, rejected)  # round 1 passes, round 2 is refused
    body = {"task": "the time " + scripted, "mcp_servers": ["time"]}
    if how == "background":
        started = await bridge.post("/v1/runs", json=body)
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
    else:
        answer = await bridge.post("/v1/autonomous", json=body)
        assert answer.status_code == 422 and answer.json()["code"] == "upstream_rejected", answer.text
        run_id = (await bridge.get("/v1/runs", params={"limit": 1})).json()["data"][0]["run_id"]

    async def ended() -> dict[str, Any] | None:
        record = dict((await bridge.get(f"/v1/runs/{run_id}")).json())
        return record if record["status"] not in ("queued", "running") else None

    record = await eventually(ended, 30, "the run ended")
    assert record["status"] == "failed" and record["error"]["code"] == "upstream_rejected", record
    assert record["rounds"] == 1, record
    [step] = record["steps"]
    assert (step["server"], step["tool"], step["is_error"]) == ("time", "get_current_time", False), step
    if written == "as text":
        assert step["recovered_from"] == "hermes", step
    async with bridge.stream("GET", f"/v1/runs/{run_id}/events") as response:
        events = [event for event, _ in await read_sse(response)]
    assert events.count("tool_call.completed") == 1 and events[-1] == "run.failed", events
    assert [r["status"] for r in await mock.chat_requests()] == [200, 400]
