"""Gateway replicas: two real gateway processes (distinct BRIDGE_INSTANCE_IDs, a short BRIDGE_LEASE_S) on one
run store (PostgreSQL, and SQLite: two processes on one file), one mock LM Studio.

A run started on replica A is read on B and its events streamed on B, resumed with Last-Event-ID; runs of A,
running or queued, are cancelled through B and end `cancelled` as a cancel through A does; a tool call of a run
on A is approved or denied through B, with the answers A gives (404 only for an unknown run or call); A killed with
SIGKILL mid-run leaves its run `interrupted` (seen on B, a follower on B gets the terminal event) within the
lease plus a heartbeat period; B goes on serving and leaves no trace in the store after its clean shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

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
)
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.scenarios.conftest import GatewayProcess, alive, child_processes, describe, gateway_process, process_env

pytestmark = pytest.mark.timeout(240)

LEASE_S = 2.0  # BRIDGE_LEASE_S of both replicas
HEARTBEAT_S = LEASE_S / 3  # how often a replica renews its lease and looks for expired ones
SLACK_S = 2.0  # scheduling on a busy test machine, on top of what the lease allows
ROUNDS = 4
STEPPED = "Rounds " + script(calls=[[TIME_CALL]] * ROUNDS, delay_ms=600)
LOOP = "Loop " + script(forever=TIME_CALL, delay_ms=200)  # a tool round every ~200 ms until stopped
TERMINAL = ("run.completed", "run.failed")
GATED = "time__convert_time"  # needs a person's approval (BRIDGE_APPROVAL_TOOLS); get_current_time does not
CONVERT = call(GATED, {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"})


@pytest.fixture
def env(mock: MockLMStudio, database_url: str, tmp_path: Path) -> dict[str, str]:
    return process_env(mock, database_url, tmp_path, BRIDGE_LEASE_S=str(LEASE_S), BRIDGE_APPROVAL_TOOLS=GATED)


@contextlib.asynccontextmanager
async def replicas(env: dict[str, str]) -> AsyncIterator[tuple[GatewayProcess, GatewayProcess]]:
    """Replica A (one run slot: a second run queues) and replica B, started together on the empty store."""
    async with contextlib.AsyncExitStack() as stack:
        a, b = await asyncio.gather(
            stack.enter_async_context(
                gateway_process(env, BRIDGE_INSTANCE_ID="replica-a", BRIDGE_MAX_CONCURRENT_RUNS="1")
            ),
            stack.enter_async_context(gateway_process(env, BRIDGE_INSTANCE_ID="replica-b")),
        )
        yield a, b


async def instances(url: str) -> list[str]:
    """The instance ids holding a lease in the store."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return sorted((await conn.execute(text("SELECT id FROM instances"))).scalars())
    finally:
        await engine.dispose()


async def start(gw: GatewayProcess, task: str) -> dict[str, Any]:
    response = await gw.client.post("/v1/runs", json={"task": task, "mcp_servers": ["time"], "max_rounds": 100})
    assert response.status_code == 202, response.text
    return dict(response.json())


async def running_with_steps(gw: GatewayProcess, run_id: str, steps: int = 1) -> dict[str, Any]:
    async def stepped() -> dict[str, Any] | None:
        rec = await record(gw.client, run_id)
        assert rec["status"] in ("queued", "running"), rec
        return rec if rec["status"] == "running" and len(rec["steps"]) >= steps else None

    return dict(await eventually(stepped, 30, f"run {run_id} running with {steps} step(s)"))


async def first_frames(client: httpx.AsyncClient, run_id: str, until: str) -> list[Frame]:
    """The run's event stream from the start up to the first `until` event; then the client goes away."""
    seen: list[Frame] = []
    async with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
        async for frame in frames(response):
            seen.append(frame)
            if frame.event == until:
                break
    return seen


async def cancel(gw: GatewayProcess, run_id: str) -> httpx.Response:
    return await gw.client.post(f"/v1/runs/{run_id}/cancel")


def assert_cancelling(response: httpx.Response, run_id: str) -> None:
    assert response.status_code == 202, response.text
    assert response.json() == {"run_id": run_id, "status": "cancelling"}


async def check_resumed_stream(a: GatewayProcess, b: GatewayProcess) -> None:
    run_id = (await start(a, STEPPED))["run_id"]
    on_b = await record(b.client, run_id)
    assert on_b["run_id"] == run_id and on_b["status"] in ("queued", "running"), on_b
    assert on_b["task"] == STEPPED

    head = await first_frames(b.client, run_id, until="tool_call.completed")
    assert head[0].event == "run.started" and head[-1].event == "tool_call.completed", head
    assert (await record(b.client, run_id))["status"] == "running"  # the client left mid-run
    async with b.client.stream("GET", f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(head[-1].id)}) as r:
        rest = [frame async for frame in frames(r)]

    done = await finished(b.client, run_id)
    assert done["status"] == "completed" and done["output"], done
    assert len(done["steps"]) == ROUNDS and done == await record(a.client, run_id)
    everything = await events_of(b.client, run_id)
    assert head + rest == everything
    assert [frame.id for frame in everything] == list(range(1, len(everything) + 1))
    assert [frame.event for frame in everything if frame.event in TERMINAL] == ["run.completed"]
    assert everything[-1].event == "run.completed" and everything[-1].data["status"] == "completed"
    assert [frame.event for frame in everything].count("tool_call.completed") == ROUNDS


async def check_cancels(a: GatewayProcess, b: GatewayProcess) -> None:
    loop_run = (await start(a, LOOP))["run_id"]
    await running_with_steps(b, loop_run)
    queued = await start(a, "Queued " + script(answer="never"))  # A's one run slot is taken
    assert queued["status"] == "queued", queued

    assert_cancelling(await cancel(b, queued["run_id"]), queued["run_id"])
    ended = await finished(b.client, queued["run_id"], 10)
    assert ended["status"] == "cancelled" and ended["output"] == "The run was cancelled before it started.", ended
    assert [(f.event, f.data["status"]) for f in await events_of(b.client, queued["run_id"])] == [
        ("run.completed", "cancelled")
    ]

    assert_cancelling(await cancel(b, loop_run), loop_run)
    remote = await finished(b.client, loop_run, 10)
    assert remote["status"] == "cancelled" and remote["steps"], remote

    local_run = (await start(a, LOOP))["run_id"]  # the same, cancelled through its own replica
    await running_with_steps(a, local_run)
    assert_cancelling(await cancel(a, local_run), local_run)
    local = await finished(a.client, local_run, 10)
    assert local["status"] == "cancelled" and local["steps"], local
    assert remote["output"].startswith("The run was cancelled.") and local["output"].startswith(
        "The run was cancelled."
    )
    for run_id in (loop_run, local_run):
        frames_b = await events_of(b.client, run_id)
        assert [f.event for f in frames_b if f.event in TERMINAL] == ["run.completed"], frames_b
        assert frames_b[-1].data["status"] == "cancelled"
        for gw in (a, b):  # once it ended, both answer a cancel the same way
            again = await cancel(gw, run_id)
            assert again.status_code == 409 and again.json()["code"] == "run_finished", again.text


async def asked(gw: GatewayProcess, run_id: str) -> str:
    """The tool_call_id of the run's first `approval.requested`, read from `gw`'s event stream."""
    async with gw.client.stream("GET", f"/v1/runs/{run_id}/events") as response:
        async for frame in frames(response):
            assert frame.event not in TERMINAL, frame
            if frame.event == "approval.requested":
                return str(frame.data["tool_call_id"])
    raise AssertionError("the events ended before an approval was asked for")


async def check_approvals(a: GatewayProcess, b: GatewayProcess) -> None:
    approved = (await start(a, "Convert " + script(calls=[[CONVERT]])))["run_id"]
    call_id = await asked(a, approved)  # from A's live stream: B may not have it stored yet
    url = f"/v1/runs/{approved}/approvals"
    unknown = await b.client.post(f"{url}/call_9_9", json={"decision": "approve"})
    assert assert_problem(unknown, 404, "approval_not_found").get("awaiting") == [call_id]
    no_run = await b.client.post(f"/v1/runs/run_nothere/approvals/{call_id}", json={"decision": "approve"})
    assert_problem(no_run, 404, "run_not_found")
    decided = await b.client.post(f"{url}/{call_id}", json={"decision": "approve"})
    assert decided.status_code == 200, decided.text
    assert decided.json() == {"run_id": approved, "tool_call_id": call_id, "decision": "approve"}
    again = await b.client.post(f"{url}/{call_id}", json={"decision": "deny"})  # the first decision holds
    assert_problem(again, 404, "approval_not_found")
    done = await finished(b.client, approved)
    assert done["status"] == "completed", done
    [step] = done["steps"]
    assert step["approval"] == "approved" and step["is_error"] is False and "Asia/Tokyo" in step["output"], step
    for gw in (a, b):  # once decided, both answer the same way
        assert_problem(
            await gw.client.post(f"{url}/{call_id}", json={"decision": "approve"}), 404, "approval_not_found"
        )

    denied = (await start(a, "Convert " + script(calls=[[CONVERT]])))["run_id"]
    call_id = await asked(b, denied)  # from B's stream of A's run
    body = {"decision": "deny", "reason": "not from B"}
    assert (await b.client.post(f"/v1/runs/{denied}/approvals/{call_id}", json=body)).status_code == 200
    done = await finished(a.client, denied)
    [step] = done["steps"]
    assert step["approval"] == "denied" and "not from B" in step["output"], step
    decided_events = [f for f in await events_of(b.client, denied) if f.event == "approval.decided"]
    assert [(f.data["decision"], f.data["reason"]) for f in decided_events] == [("denied", "not from B")]
    relayed = (await a.client.get("/metrics")).text
    assert 'bridge_relayed_total{direction="received",kind="approval"} 2.0' in relayed, relayed[-2000:]
    assert 'bridge_relayed_total{direction="sent",kind="approval"} 2.0' in (await b.client.get("/metrics")).text


async def check_kill(a: GatewayProcess, b: GatewayProcess) -> None:
    run_id = (await start(a, LOOP))["run_id"]
    before = await running_with_steps(b, run_id, steps=2)
    follower = asyncio.ensure_future(events_of(b.client, run_id))  # on B, following A's run
    servers = child_processes(a.ps)  # A's time server: orphaned by kill -9, it must still go away
    a.descendants |= servers
    a.process.kill()
    killed = time.monotonic()
    assert await a.process.wait() == -9

    bound = LEASE_S + HEARTBEAT_S + SLACK_S

    async def interrupted() -> dict[str, Any] | None:
        rec = await record(b.client, run_id)
        return rec if rec["status"] == "interrupted" else None

    rec = await eventually(interrupted, bound, "the killed replica's run interrupted")
    took = time.monotonic() - killed
    assert took >= LEASE_S - HEARTBEAT_S - 0.1, took  # not before A's lease could have run out
    assert rec["error"]["code"] == "interrupted" and "'replica-a'" in rec["error"]["detail"], rec["error"]
    assert rec["finished_at"] is not None and rec["steps"][: len(before["steps"])] == before["steps"]

    followed = await asyncio.wait_for(follower, 10)
    assert followed[-1].event == "run.failed" and followed[-1].data["code"] == "interrupted", followed[-3:]
    assert [f.event for f in followed if f.event in TERMINAL] == ["run.failed"]
    assert followed == await events_of(b.client, run_id)
    try:
        await eventually(lambda: not alive(servers), 10, "the killed replica's MCP server exiting")
    except AssertionError:
        raise AssertionError(f"left running after kill -9: {describe(alive(servers))}") from None
    print(f"run interrupted {took:.2f} s after the kill (lease {LEASE_S:g} s, heartbeat {HEARTBEAT_S:.2f} s)")


async def test_two_replicas_on_one_store_behave_as_one(env: dict[str, str]) -> None:
    url = env["BRIDGE_DATABASE_URL"]
    async with replicas(env) as (a, b):
        assert await instances(url) == ["replica-a", "replica-b"]
        await check_resumed_stream(a, b)
        await check_cancels(a, b)
        await check_approvals(a, b)
        await check_kill(a, b)
        assert await instances(url) == ["replica-b"]  # B claimed A's lease

        short = (await start(b, "Short " + script(answer="done")))["run_id"]  # B goes on serving
        assert (await finished(b.client, short))["output"] == "done"
        assert await b.sigterm(within_s=30) == 0, b.log_tail()
        errors = [
            line for line in b.log_tail(200_000).splitlines() if '"level": "ERROR"' in line or "Traceback" in line
        ]
        assert not errors, "\n".join(errors)
        assert "'replica-a' sent no heartbeat" in b.log_tail(200_000)
    assert await instances(url) == []  # B's clean shutdown released its lease
