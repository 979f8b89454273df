"""/v1/runs: background runs, their stored records and event streams, cancel, delete, the queue and approvals.

Every test runs on both run stores: the module's gateway settings are parametrized over SQLite and
PostgreSQL (a fresh database of the session's cluster), and the extra gateways below take a fresh store
of the same kind.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.conftest import CLIENT_TIMEOUT_S, app_client, make_settings, served
from tests.helpers import (
    TIME_CALL,
    Frame,
    assert_problem,
    call,
    events_of,
    eventually,
    finished,
    frames,
    record,
    script,
    start_run,
    write_mcp_json,
)
from tests.mock_lmstudio.fixture import MockLMStudio

pytestmark = pytest.mark.timeout(120)

TIME = "time__get_current_time"
CHAT = "/v1/chat/completions"
OTHER_MODEL = "mistralai/magistral-small-2509"


# --- the module's gateways ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway_settings(either_store: dict[str, Any]) -> dict[str, Any]:
    """The module's gateway on a fresh store of each kind (so every test below runs on both)."""
    return either_store


def extra_settings(
    mock_server: MockLMStudio, mcp_json: Path, fresh_store: Callable[[], str], **overrides: Any
) -> Settings:
    values = {"lmstudio_base_url": mock_server.base_url, "mcp_config": str(mcp_json), "database_url": fresh_store()}
    return make_settings(**{**values, **overrides})


@pytest.fixture(scope="module", params=["setting", "mcp.json"])
async def approvals(
    request: pytest.FixtureRequest,
    mock_server: MockLMStudio,
    files: Path,
    mcp_json: Path,
    fresh_store: Callable[[], str],
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway (real socket) where the time server's get_current_time needs a person's approval: through
    BRIDGE_APPROVAL_TOOLS, or through the time server's `bridge.approval_tools` in mcp.json."""
    if request.param == "setting":
        settings = extra_settings(mock_server, mcp_json, fresh_store, approval_tools=["time__*"])
    else:
        gated = {"bridge": {"approval_tools": ["get_current_*"]}}  # merged into the time server's entry
        config = write_mcp_json(files.parent / f"mcp-approvals-{uuid.uuid4().hex[:8]}.json", str(files), time=gated)
        assert json.loads(config.read_text())["mcpServers"]["time"]["args"][:2] == ["-m", "mcp_server_time"]
        settings = extra_settings(mock_server, config, fresh_store)
    async with served(settings, timeout=CLIENT_TIMEOUT_S) as client:
        yield client


# --- helpers ------------------------------------------------------------------------------------------


async def status_becomes(client: httpx.AsyncClient, run_id: str, status: str, within_s: float = 10.0) -> None:
    async def check() -> bool:
        return bool((await record(client, run_id))["status"] == status)

    await eventually(check, within_s, f"run {run_id} {status}")


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def just_before(value: str) -> str:
    """A `since` one microsecond before a record's created_at: the record's time is rounded to the
    microsecond, so `since=<its own created_at>` can leave it out (see test_since_includes_...)."""
    return (when(value) - timedelta(microseconds=1)).isoformat()


def held_task(gate: str) -> dict[str, Any]:
    """A run's body whose LM Studio answers wait at `gate` of the mock until it is released."""
    return {"task": f"slow {gate} " + script(hold=gate), "mcp_servers": ["time"]}


async def run_ids(client: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await client.get("/v1/runs", params=params)
    assert response.status_code == 200, response.text
    return [item["run_id"] for item in response.json()["data"]]


# --- 1. a background run ------------------------------------------------------------------------------


async def test_a_background_run_completes_on_its_own(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    task = "What time is it? " + script(calls=[[TIME_CALL]], hold="on-its-own")
    async with httpx.AsyncClient(base_url=live.base_url) as once:  # a client that leaves after the 202
        response = await once.post("/v1/runs", json={"task": task, "mcp_servers": ["time"]})
    assert response.status_code == 202, response.text
    await mock.until_held("on-its-own")  # LM Studio answers only once the client has gone
    await mock.release("on-its-own")
    accepted = response.json()
    run_id = accepted["run_id"]
    assert set(accepted) == {"run_id", "status"} and accepted["status"] in ("queued", "running")
    assert run_id.startswith("run_") and response.headers["location"] == f"/v1/runs/{run_id}"

    async def both_answers_given() -> bool:  # the run went on with nobody asking about it
        requests = await mock.chat_requests()
        return len(requests) == 2 and all(r["ended"] is not None for r in requests)

    await eventually(both_answers_given, 10, "the run's two LM Studio calls")
    rec = await finished(live, run_id)
    assert rec["status"] == "completed"

    sync = (await live.post("/v1/autonomous", json={"task": task, "mcp_servers": ["time"]})).json()
    assert set(sync) <= set(rec), set(sync) - set(rec)  # the /v1/autonomous result fields, and more
    assert rec["run_id"] == run_id and rec["task"] == task and rec["model"] == "qwen/qwen3-4b"
    assert rec["model_requested"] is None and rec["mcp_servers"] == ["time"] and rec["rounds"] == 1
    assert rec["error"] is None and rec["incomplete"] is False and rec["warnings"] == []
    assert rec["usage"]["total_tokens"] > 0 and rec["duration_ms"] > 0
    assert when(rec["created_at"]) <= when(rec["started_at"]) <= when(rec["finished_at"])
    [step] = rec["steps"]
    assert (step["name"], step["server"], step["tool"]) == (TIME, "time", "get_current_time")
    assert step["arguments"] == {"timezone": "UTC"} and step["is_error"] is False and step["approval"] is None
    assert '"timezone": "UTC"' in step["output"] and step["output"] in rec["output"]
    # the sync run's answer has the same shape and steps
    assert [s["tool"] for s in sync["steps"]] == ["get_current_time"] and sync["status"] == "completed"


# --- 2. events ----------------------------------------------------------------------------------------


async def test_events_replay_with_ids_and_resume(live: httpx.AsyncClient) -> None:
    run_id = await start_run(live, task="Time " + script(calls=[[TIME_CALL]]), mcp_servers=["time"])
    await finished(live, run_id)
    everything = await events_of(live, run_id)
    n = len(everything)
    assert [f.id for f in everything] == list(range(1, n + 1))
    kinds = [f.event for f in everything]
    assert kinds[0] == "run.started" and kinds[-1] == "run.completed"
    assert sum(k in ("run.completed", "run.failed") for k in kinds) == 1
    assert {"round.started", "tool_call.started", "tool_call.completed", "message"} <= set(kinds)
    assert everything[0].data["run_id"] == run_id
    assert everything[-1].data["status"] == "completed" and everything[-1].data["run_id"] == run_id
    assert everything[-1].data["steps"] == (await record(live, run_id))["steps"]

    for k in (0, 1, 3, n - 1, n):
        by_header = await events_of(live, run_id, headers={"Last-Event-ID": str(k)})
        by_query = await events_of(live, run_id, params={"after": k})
        assert by_header == everything[k:], k
        assert by_query == everything[k:], k
    assert await events_of(live, run_id, headers={"Last-Event-ID": str(n + 5)}) == []
    bad = await live.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "two"})
    assert_problem(bad, 422, "validation_error")


async def raw_events(response: httpx.Response) -> list[tuple[str, str]]:
    """(event, the `data:` line as sent) of every progress event of an SSE response."""
    assert response.status_code == 200
    found, event = [], ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event not in ("run.completed", "run.failed"):
            found.append((event, line[6:]))
    return found


async def test_a_streamed_run_sends_each_event_as_the_store_keeps_it(live: httpx.AsyncClient) -> None:
    """A streamed run's progress events are serialised once: the live stream's `data:` lines are the stored
    events' text byte for byte (non-ASCII as is, redacted as stored)."""
    body = {"task": "Heure " + script(calls=[[TIME_CALL]], final="À Tokyo ✓"), "mcp_servers": ["time"], "stream": True}
    async with live.stream("POST", "/v1/autonomous", json=body) as response:
        run_id, sent = response.headers["x-run-id"], await raw_events(response)
    async with live.stream("GET", f"/v1/runs/{run_id}/events") as replay:
        stored = await raw_events(replay)
    assert sent[0][0] == "run.started" and "tool_call.completed" in dict(sent)
    assert sent == stored
    assert '"À Tokyo ✓"' in dict(sent)["message"]


async def test_a_live_stream_resumes_after_last_event_id(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    rounds = [[call(TIME, {"timezone": zone})] for zone in ("UTC", "Europe/Paris", "Asia/Tokyo")]
    run_id = await start_run(live, task="Slowly " + script(calls=rounds, hold="resume"), mcp_servers=["time"])
    async with live.stream("GET", f"/v1/runs/{run_id}/events") as response:
        stream = frames(response)
        first = [await anext(stream), await anext(stream)]
    assert [f.id for f in first] == [1, 2] and first[0].event == "run.started"
    assert (await record(live, run_id))["status"] == "running"  # the stream was left while the run went on
    await mock.release("resume")
    rest = await events_of(live, run_id, headers={"Last-Event-ID": "2"})
    assert rest[-1].event == "run.completed" and rest[-1].data["status"] == "completed"
    union = first + rest
    assert [f.id for f in union] == list(range(1, len(union) + 1))  # every event exactly once
    assert union == await events_of(live, run_id)
    assert [s["arguments"]["timezone"] for s in rest[-1].data["steps"]] == ["UTC", "Europe/Paris", "Asia/Tokyo"]


# --- 3. cancel and delete -----------------------------------------------------------------------------


async def test_cancel_then_delete(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    # LM Studio answers the first call (a tool call), the second never: cancelled after exactly one step
    await mock.faults({"kind": "delay", "ms": 0, "path": CHAT}, {"kind": "hang", "path": CHAT})
    run_id = await start_run(live, task="Forever " + script(forever=TIME_CALL), mcp_servers=["time"])

    async def a_step_done() -> bool:
        return len((await record(live, run_id))["steps"]) >= 1

    await eventually(a_step_done, 10, "the first step")
    assert_problem(await live.delete(f"/v1/runs/{run_id}"), 409, "run_active")
    cancelling = await live.post(f"/v1/runs/{run_id}/cancel")
    assert cancelling.status_code == 202, cancelling.text
    assert cancelling.json() == {"run_id": run_id, "status": "cancelling"}

    rec = await finished(live, run_id)
    assert rec["status"] == "cancelled"
    assert [s["tool"] for s in rec["steps"]] == ["get_current_time"]
    assert rec["output"].startswith("The run was cancelled.") and "get_current_time" in rec["output"]
    assert rec["finished_at"] is not None
    events = await events_of(live, run_id)
    assert events[-1].event == "run.completed" and events[-1].data["status"] == "cancelled"

    again = assert_problem(await live.post(f"/v1/runs/{run_id}/cancel"), 409, "run_finished")
    assert again.get("run_status") == "cancelled"
    deleted = await live.delete(f"/v1/runs/{run_id}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert_problem(await live.get(f"/v1/runs/{run_id}"), 404, "run_not_found")
    assert_problem(await live.get(f"/v1/runs/{run_id}/events"), 404, "run_not_found")
    assert_problem(await live.delete(f"/v1/runs/{run_id}"), 404, "run_not_found")
    assert run_id not in await run_ids(live, limit=200)


async def test_unknown_run_is_404(live: httpx.AsyncClient) -> None:
    nobody = "run_000000000000000000000000"
    assert_problem(await live.get(f"/v1/runs/{nobody}"), 404, "run_not_found")
    assert_problem(await live.post(f"/v1/runs/{nobody}/cancel"), 404, "run_not_found")
    assert_problem(await live.delete(f"/v1/runs/{nobody}"), 404, "run_not_found")
    assert_problem(await live.get(f"/v1/runs/{nobody}/events"), 404, "run_not_found")
    assert_problem(await live.get(f"/v1/runs/{nobody}/events", params={"after": 3}), 404, "run_not_found")
    decided = await live.post(f"/v1/runs/{nobody}/approvals/call_1_0", json={"decision": "approve"})
    assert_problem(decided, 404, "run_not_found")


# --- 4. the list --------------------------------------------------------------------------------------


async def test_list_pages_and_filters(live: httpx.AsyncClient) -> None:
    async def sync_run(**body: Any) -> str:
        response = await live.post("/v1/autonomous", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["run_id"])

    r1 = await start_run(live, task="one", mcp_servers=["time"])
    await finished(live, r1)
    r2 = await sync_run(task="two", mcp_servers=["fault"])
    r3 = await sync_run(task="three " + script(forever=TIME_CALL), mcp_servers=["time"], max_rounds=1)
    r4 = await sync_run(task="four", mcp_servers=["fault"], model=OTHER_MODEL)
    r5 = await start_run(live, task="five", mcp_servers=["time", "fault"])
    await finished(live, r5)
    mine = [r5, r4, r3, r2, r1]  # newest first

    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = await live.get("/v1/runs", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["data"]) <= 2 and all(item["steps"] == [] for item in page["data"])
        seen += [item["run_id"] for item in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 500
    assert len(seen) == len(set(seen))  # each run exactly once
    assert seen[:5] == mine  # the newest ones, newest first
    assert seen == await run_ids(live, limit=200)

    created = {r: just_before((await record(live, r))["created_at"]) for r in mine}
    assert await run_ids(live, since=created[r1]) == mine
    assert await run_ids(live, since=created[r3]) == [r5, r4, r3]
    assert await run_ids(live, since=created[r1], server="fault") == [r5, r4, r2]
    assert await run_ids(live, since=created[r1], server="time") == [r5, r3, r1]
    assert await run_ids(live, since=created[r1], model=OTHER_MODEL) == [r4]
    assert await run_ids(live, since=created[r1], model="qwen/qwen3-4b") == [r5, r3, r2, r1]
    assert await run_ids(live, since=created[r1], status="max_rounds") == [r3]
    assert await run_ids(live, since="2999-01-01T00:00:00Z") == []
    listed = (await live.get("/v1/runs", params={"status": "max_rounds", "limit": 200})).json()["data"]
    assert r3 in [item["run_id"] for item in listed] and {item["status"] for item in listed} == {"max_rounds"}
    [item] = (await live.get("/v1/runs", params={"since": created[r4], "model": OTHER_MODEL})).json()["data"]
    assert item["model_requested"] == OTHER_MODEL and item["task"] == "four" and item["mcp_servers"] == ["fault"]

    for params in (
        {"cursor": "abc"},
        {"cursor": "-1"},
        {"cursor": "1" * 20},
        {"limit": 0},
        {"limit": 201},
        {"status": "sleeping"},
        {"since": "yesterday"},
    ):
        assert_problem(await live.get("/v1/runs", params=params), 422, "validation_error")


async def test_since_includes_a_run_created_at_that_instant(live: httpx.AsyncClient) -> None:
    for _ in range(8):
        run_id = (await live.post("/v1/autonomous", json={"task": "now", "mcp_servers": ["time"]})).json()["run_id"]
        created_at = (await record(live, run_id))["created_at"]
        assert run_id in await run_ids(live, since=created_at), created_at


async def test_a_cursor_beyond_the_row_numbers_is_not_a_server_error(live: httpx.AsyncClient) -> None:
    # the largest cursor the pattern lets through must still fit a 64-bit row number (SQLite raised
    # OverflowError -> 500 for 19 digits while the pattern was ^\d{1,19}$)
    widest = await live.get("/v1/runs", params={"cursor": "9" * 18, "limit": 1})
    assert widest.status_code == 200, widest.text
    assert len(widest.json()["data"]) == 1
    beyond = await live.get("/v1/runs", params={"cursor": "9" * 19})
    assert_problem(beyond, 422, "validation_error")  # 19 digits: refused by the cursor's pattern


# --- 5. the queue -------------------------------------------------------------------------------------


async def test_runs_queue_for_a_slot_and_a_full_queue_is_429(
    mock_server: MockLMStudio, mcp_json: Path, fresh_store: Callable[[], str]
) -> None:
    settings = extra_settings(mock_server, mcp_json, fresh_store, max_concurrent_runs=1, max_queued_runs=1)
    gates = [f"queue-{uuid.uuid4().hex[:8]}" for _ in range(2)]  # (the mock is shared by both store kinds)
    slow = held_task(gates[0])
    async with app_client(settings, timeout=CLIENT_TIMEOUT_S) as client:
        first = await client.post("/v1/runs", json=slow)
        second = await client.post("/v1/runs", json={**slow, "task": "second " + script()})
        third = await client.post("/v1/runs", json=slow)
        assert (first.status_code, first.json()["status"]) == (202, "running"), first.text
        assert (second.status_code, second.json()["status"]) == (202, "queued"), second.text
        assert_problem(third, 429, "queue_full")
        assert int(third.headers["retry-after"]) >= 1
        one, two = first.json()["run_id"], second.json()["run_id"]
        waiting = await record(client, two)
        assert waiting["status"] == "queued" and waiting["started_at"] is None and waiting["finished_at"] is None
        assert (await record(client, one))["status"] == "running"
        await mock_server.release(gates[0])

        done_one, done_two = await finished(client, one), await finished(client, two)
        assert done_one["status"] == done_two["status"] == "completed"
        assert when(done_one["finished_at"]) <= when(done_two["started_at"])  # one slot: one after the other
        assert when(done_two["created_at"]) < when(done_one["finished_at"])

        # the queue is free again; a queued run that is cancelled ends `cancelled` without having started
        slow = held_task(gates[1])
        running = await start_run(client, **slow)
        queued_response = await client.post("/v1/runs", json=slow)
        assert queued_response.json()["status"] == "queued"
        queued = queued_response.json()["run_id"]
        assert_problem(await client.post("/v1/runs", json=slow), 429, "queue_full")
        assert (await record(client, queued))["status"] == "queued"  # (lets its task start: see the next test)
        assert (await client.post(f"/v1/runs/{queued}/cancel")).status_code == 202
        gone = await finished(client, queued)
        assert gone["status"] == "cancelled" and gone["started_at"] is None and gone["steps"] == []
        assert [f.event for f in await events_of(client, queued)] == ["run.completed"]
        refill = await client.post("/v1/runs", json={**slow, "task": "refill"})
        assert (refill.status_code, refill.json()["status"]) == (202, "queued"), refill.text
        assert (await client.post(f"/v1/runs/{running}/cancel")).status_code == 202
        assert (await finished(client, running))["status"] == "cancelled"
        await mock_server.release(gates[1])
        assert (await finished(client, refill.json()["run_id"]))["status"] == "completed"


async def test_a_queued_run_cancelled_at_once_ends_cancelled(
    mock_server: MockLMStudio, mcp_json: Path, fresh_store: Callable[[], str]
) -> None:
    settings = extra_settings(mock_server, mcp_json, fresh_store, max_concurrent_runs=1, max_queued_runs=1)
    gate = f"queue-{uuid.uuid4().hex[:8]}"
    slow = held_task(gate)  # the running one stays running until cancelled
    async with app_client(settings, timeout=CLIENT_TIMEOUT_S) as client:
        running = await start_run(client, **slow)
        queued = await start_run(client, **slow)
        assert (await client.post(f"/v1/runs/{queued}/cancel")).status_code == 202  # at once
        try:
            assert (await finished(client, queued, within_s=5))["status"] == "cancelled"
            # its queue place is free again
            again = await client.post("/v1/runs", json=slow)
            assert (again.status_code, again.json().get("status")) == (202, "queued"), again.text
        finally:
            await client.post(f"/v1/runs/{running}/cancel")
            await mock_server.release(gate)


# --- 6. every run is recorded -------------------------------------------------------------------------


async def test_sync_and_chat_runs_are_recorded(live: httpx.AsyncClient) -> None:
    task = "Time? " + script(calls=[[TIME_CALL]])
    sync = (await live.post("/v1/autonomous", json={"task": task, "mcp_servers": ["time"]})).json()
    rec = await record(live, sync["run_id"])
    assert rec["status"] == "completed" and rec["task"] == task
    assert rec["output"] == sync["output"] and rec["steps"] == sync["steps"]
    assert rec["usage"] == sync["usage"] and rec["rounds"] == sync["rounds"] == 1

    messages = [{"role": "user", "content": task}]
    chat = await live.post(
        "/v1/chat/completions", json={"model": "qwen/qwen3-4b", "messages": messages, "mcp_servers": ["time"]}
    )
    assert chat.status_code == 200, chat.text
    bridge_run = chat.json()["bridge_run"]
    chat_rec = await record(live, bridge_run["run_id"])
    assert chat_rec["status"] == "completed" and chat_rec["task"] == task
    assert chat_rec["options"]["messages"] == messages
    assert chat_rec["steps"] == bridge_run["steps"] and chat_rec["steps"][0]["tool"] == "get_current_time"
    assert chat_rec["output"] == chat.json()["choices"][0]["message"]["content"]

    unrecorded = (
        await live.post("/v1/autonomous", json={"task": task, "mcp_servers": ["time"], "store": False})
    ).json()
    assert unrecorded["status"] == "completed"
    assert_problem(await live.get(f"/v1/runs/{unrecorded['run_id']}"), 404, "run_not_found")
    assert_problem(await live.get(f"/v1/runs/{unrecorded['run_id']}/events"), 404, "run_not_found")
    no_store = {"model": "qwen/qwen3-4b", "messages": messages, "mcp_servers": ["time"], "store": False}
    chat_unrecorded = (await live.post("/v1/chat/completions", json=no_store)).json()["bridge_run"]
    assert_problem(await live.get(f"/v1/runs/{chat_unrecorded['run_id']}"), 404, "run_not_found")


async def test_a_background_run_is_always_stored_and_never_streams(live: httpx.AsyncClient) -> None:
    before = await run_ids(live, limit=200)
    assert_problem(await live.post("/v1/runs", json={"task": "x", "store": False}), 422, "validation_error")
    assert_problem(await live.post("/v1/runs", json={"task": "x", "stream": True}), 422, "validation_error")
    unknown_server = await live.post("/v1/runs", json={"task": "x", "mcp_servers": ["nope"]})
    assert_problem(unknown_server, 422, "mcp_server_not_found")
    assert_problem(await live.post("/v1/runs", json={"task": "x", "model": "nope/nope"}), 422, "model_not_found")
    assert_problem(await live.post("/v1/runs", json={"task": ""}), 422, "validation_error")
    assert await run_ids(live, limit=200) == before  # nothing recorded for a refused run


# --- 7. approvals -------------------------------------------------------------------------------------


async def asking(client: httpx.AsyncClient, task: str) -> tuple[str, Frame]:
    """Start a run that calls a gated tool; its id and `approval.requested` event once it waits."""
    run_id = await start_run(client, task=task, mcp_servers=["time"])
    async with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
        async for frame in frames(response):
            if frame.event == "approval.requested":
                return run_id, frame
            assert frame.event not in ("run.completed", "run.failed"), frame
    raise AssertionError("the events ended before an approval was asked for")


async def test_approve_runs_the_exact_arguments(approvals: httpx.AsyncClient) -> None:
    arguments = {"timezone": "Asia/Tokyo"}
    task = "Tokyo time " + script(calls=[[call(TIME, arguments)]])
    run_id = await start_run(approvals, task=task, mcp_servers=["time"])
    async with approvals.stream("GET", f"/v1/runs/{run_id}/events") as response:
        stream = frames(response)
        before: list[Frame] = []
        async for frame in stream:
            before.append(frame)
            if frame.event == "approval.requested":
                break
        asked = before[-1]
        assert asked.event == "approval.requested", [f.event for f in before]
        call_id = asked.data["tool_call_id"]
        assert asked.data == {
            "tool_call_id": call_id,
            "name": TIME,
            "server": "time",
            "tool": "get_current_time",
            "arguments": arguments,
        }
        assert call_id and "tool_call.started" in [f.event for f in before]
        waiting = await record(approvals, run_id)
        assert waiting["status"] == "awaiting_approval" and waiting["steps"] == []
        assert run_id in await run_ids(approvals, status="awaiting_approval")

        unknown = await approvals.post(f"/v1/runs/{run_id}/approvals/call_9_9", json={"decision": "approve"})
        assert assert_problem(unknown, 404, "approval_not_found").get("awaiting") == [call_id]
        bad = await approvals.post(f"/v1/runs/{run_id}/approvals/{call_id}", json={"decision": "maybe"})
        assert_problem(bad, 422, "validation_error")

        decided = await approvals.post(f"/v1/runs/{run_id}/approvals/{call_id}", json={"decision": "approve"})
        assert decided.status_code == 200, decided.text
        assert decided.json() == {"run_id": run_id, "tool_call_id": call_id, "decision": "approve"}
        after = [frame async for frame in stream]

    union = before + after
    assert [f.id for f in union] == list(range(1, len(union) + 1))
    [verdict] = [f for f in after if f.event == "approval.decided"]
    assert verdict.data["decision"] == "approved" and verdict.data["tool_call_id"] == call_id
    assert after[-1].event == "run.completed" and after[-1].data["status"] == "completed"
    rec = await record(approvals, run_id)
    assert rec["status"] == "completed"
    [step] = rec["steps"]
    assert step["approval"] == "approved" and step["arguments"] == arguments and step["is_error"] is False
    assert '"timezone": "Asia/Tokyo"' in step["output"]
    again = await approvals.post(f"/v1/runs/{run_id}/approvals/{call_id}", json={"decision": "approve"})
    assert_problem(again, 404, "approval_not_found")


async def test_deny_sends_the_reason_to_the_model(approvals: httpx.AsyncClient, mock: MockLMStudio) -> None:
    run_id, asked = await asking(approvals, "Time " + script(calls=[[TIME_CALL]]))
    call_id = asked.data["tool_call_id"]
    await status_becomes(approvals, run_id, "awaiting_approval")
    body = {"decision": "deny", "reason": "not today"}
    decided = await approvals.post(f"/v1/runs/{run_id}/approvals/{call_id}", json=body)
    assert decided.status_code == 200, decided.text
    rec = await finished(approvals, run_id)
    assert rec["status"] == "completed"
    [step] = rec["steps"]
    assert step["approval"] == "denied" and step["is_error"] is True
    assert "not today" in step["output"] and "denied" in step["output"]
    tool_messages = [m for r in await mock.chat_requests() for m in r["body"]["messages"] if m.get("role") == "tool"]
    assert tool_messages and all(m["tool_call_id"] == call_id for m in tool_messages)
    assert "not today" in tool_messages[-1]["content"]
    events = await events_of(approvals, run_id)
    [verdict] = [f for f in events if f.event == "approval.decided"]
    assert (verdict.data["decision"], verdict.data["reason"]) == ("denied", "not today")


async def test_an_unanswered_approval_times_out(
    mock_server: MockLMStudio, mcp_json: Path, fresh_store: Callable[[], str]
) -> None:
    settings = extra_settings(mock_server, mcp_json, fresh_store, approval_tools=["time__*"], approval_timeout_s=0.5)
    async with app_client(settings, timeout=CLIENT_TIMEOUT_S) as client:
        run_id = await start_run(client, task="Time " + script(calls=[[TIME_CALL]]), mcp_servers=["time"])
        rec = await finished(client, run_id)
        assert rec["status"] == "completed"
        [step] = rec["steps"]
        assert step["approval"] == "timed_out" and step["is_error"] is True
        assert "nobody approved it in time" in step["output"]
        events = await events_of(client, run_id)
        kinds = [f.event for f in events]
        assert kinds.index("approval.requested") < kinds.index("approval.decided") < kinds.index("run.completed")
        [verdict] = [f for f in events if f.event == "approval.decided"]
        assert verdict.data["decision"] == "timed_out"


async def test_a_sync_run_cannot_wait_for_approval(approvals: httpx.AsyncClient) -> None:
    task = "Time " + script(calls=[[TIME_CALL]])
    response = await approvals.post("/v1/autonomous", json={"task": task, "mcp_servers": ["time"]})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "completed"
    [step] = result["steps"]
    assert step["approval"] == "denied" and step["is_error"] is True
    assert any("approval" in warning for warning in result["warnings"]), result["warnings"]
    assert (await record(approvals, result["run_id"]))["steps"] == result["steps"]
    # a tool that needs no approval runs as usual
    echo = await approvals.post(
        "/v1/autonomous",
        json={"task": "e " + script(calls=[[call("fault__echo", {"text": "hi"})]]), "mcp_servers": ["fault"]},
    )
    [plain] = echo.json()["steps"]
    assert plain["approval"] is None and plain["is_error"] is False and echo.json()["warnings"] == []


async def test_cancel_while_awaiting_approval(approvals: httpx.AsyncClient) -> None:
    run_id, asked = await asking(approvals, "Time " + script(calls=[[TIME_CALL]]))
    await status_becomes(approvals, run_id, "awaiting_approval")
    assert_problem(await approvals.delete(f"/v1/runs/{run_id}"), 409, "run_active")
    assert (await approvals.post(f"/v1/runs/{run_id}/cancel")).status_code == 202
    rec = await finished(approvals, run_id)
    assert rec["status"] == "cancelled" and rec["steps"] == []
    call_id = asked.data["tool_call_id"]
    late = await approvals.post(f"/v1/runs/{run_id}/approvals/{call_id}", json={"decision": "approve"})
    assert_problem(late, 404, "approval_not_found")
    # the request is closed by an event, stored with the run (issue 29, item 11)
    events = await events_of(approvals, run_id)
    kinds = [f.event for f in events]
    assert kinds[-3:] == ["approval.requested", "approval.decided", "run.completed"], kinds  # status `cancelled`
    [verdict] = [f for f in events if f.event == "approval.decided"]
    assert verdict.data["tool_call_id"] == call_id and verdict.data["decision"] == "cancelled", verdict.data
    assert verdict.data["reason"] == "the run was cancelled before a decision came"
