"""Restarts: a real gateway process stopped mid-run (SIGTERM with a short grace, or kill -9), then started
again on the same run store and instance id, on SQLite and on PostgreSQL.

The run is `interrupted` with the steps recorded before the stop, its event stream replays and ends with
`run.failed` (code `interrupted`), and the restarted gateway serves normally.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import TIME_CALL, eventually, script
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.processes import free_port, spawn_python
from tests.scenarios.conftest import (
    SETTING_PREFIXES,
    GatewayProcess,
    alive,
    assert_run,
    child_processes,
    describe,
    gateway_process,
    process_env,
)

pytestmark = pytest.mark.timeout(180)

INSTANCE = "restart-test-instance"
LOOP_TASK = "Loop " + script(forever=TIME_CALL, delay_ms=200)  # a tool round every ~200 ms, for ever
STEPS_BEFORE_STOP = 2


@pytest.fixture
def env(mock: MockLMStudio, database_url: str, tmp_path: Path) -> dict[str, str]:
    return process_env(mock, database_url, tmp_path, BRIDGE_INSTANCE_ID=INSTANCE)


def sqlite_file(url: str) -> Path | None:
    prefix = "sqlite+aiosqlite:///"
    return Path(url.removeprefix(prefix)) if url.startswith(prefix) else None


def integrity(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]


async def start_loop(gw: GatewayProcess) -> str:
    """POST /v1/runs a run that calls the time tool every ~200 ms until stopped; its run id."""
    body = {"task": LOOP_TASK, "mcp_servers": ["time"], "max_rounds": 100}
    response = await gw.client.post("/v1/runs", json=body)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] in ("queued", "running"), accepted
    assert response.headers["location"] == f"/v1/runs/{accepted['run_id']}"
    return str(accepted["run_id"])


async def running_with_steps(gw: GatewayProcess, run_id: str) -> dict[str, Any]:
    """Poll GET /v1/runs/{id} until the run is running with a few steps recorded; that record."""

    async def stepped() -> dict[str, Any] | None:
        response = await gw.client.get(f"/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        record: dict[str, Any] = response.json()
        assert record["status"] == "running", record
        return record if len(record["steps"]) >= STEPS_BEFORE_STOP else None

    record: dict[str, Any] = await eventually(stepped, 30, "steps recorded while the run goes on")
    return record


async def sse_with_ids(client: httpx.AsyncClient, url: str, **headers: str) -> list[tuple[int, str, Any]]:
    """Every (id, event, data) of a run's event stream."""
    out: list[tuple[int, str, Any]] = []
    fields: dict[str, str] = {}
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif "data" in fields:  # a blank line ends an event
                out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                fields = {}
    return out


async def check_interrupted(gw: GatewayProcess, run_id: str, before: dict[str, Any]) -> None:
    """The run is `interrupted`, kept the steps seen before the stop, and its events end with run.failed."""
    response = await gw.client.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["status"] == "interrupted", record
    assert record["error"] and record["error"]["code"] == "interrupted", record["error"]
    assert record["finished_at"] is not None
    seen = before["steps"]
    assert len(record["steps"]) >= len(seen), (len(record["steps"]), len(seen))
    assert record["steps"][: len(seen)] == seen
    assert all(s["server"] == "time" and s["tool"] == "get_current_time" for s in record["steps"])

    events = await sse_with_ids(gw.client, f"/v1/runs/{run_id}/events")
    ids = [seq for seq, _, _ in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    names = [name for _, name, _ in events]
    assert names[0] == "run.started", names
    assert [n for n in names if n in ("run.completed", "run.failed")] == ["run.failed"], names
    last_id, last_name, last_data = events[-1]
    assert last_name == "run.failed" and last_data["code"] == "interrupted", events[-1]
    assert names.count("tool_call.completed") == len(record["steps"]), names

    # resuming after the second-to-last event gives the terminal one only
    resumed = await sse_with_ids(gw.client, f"/v1/runs/{run_id}/events", **{"Last-Event-ID": str(ids[-2])})
    assert resumed == [events[-1]]
    assert (await sse_with_ids(gw.client, f"/v1/runs/{run_id}/events?after={last_id}")) == []

    listed = await gw.client.get("/v1/runs", params={"status": "interrupted"})
    assert listed.status_code == 200, listed.text
    assert run_id in [r["run_id"] for r in listed.json()["data"]], listed.json()


async def check_serves(gw: GatewayProcess) -> None:
    """Health and readiness fine, no error logged, a JSON run and a background run complete."""
    assert (await gw.client.get("/healthz")).status_code == 200
    ready = await gw.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    result = assert_run(await gw.run("What time? " + script(calls=[[TIME_CALL]]), mcp_servers=["time"]), "completed")
    assert len(result["steps"]) == 1 and not result["steps"][0]["is_error"], result["steps"]

    accepted = await gw.client.post("/v1/runs", json={"task": "short " + script(answer="done"), "mcp_servers": []})
    assert accepted.status_code == 202, accepted.text
    run_id = accepted.json()["run_id"]

    async def completed() -> dict[str, Any] | None:
        record: dict[str, Any] = (await gw.client.get(f"/v1/runs/{run_id}")).json()
        return record if record["status"] == "completed" else None

    record = await eventually(completed, 20, "the new background run completed")
    assert record["output"] == "done"
    errors = [line for line in gw.log_tail(200_000).splitlines() if '"level": "ERROR"' in line or "Traceback" in line]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("stop", ["sigterm", "kill"])
async def test_run_in_flight_survives_a_restart_as_interrupted(env: dict[str, str], stop: str) -> None:
    url = env["BRIDGE_DATABASE_URL"]
    async with gateway_process(env) as gw:
        run_id = await start_loop(gw)
        before = await running_with_steps(gw, run_id)
        if stop == "sigterm":
            assert await gw.sigterm(within_s=30) == 0, gw.log_tail()
        else:
            servers = child_processes(gw.ps)  # the time server: orphaned by kill -9, it must still go away
            gw.process.kill()
            assert await gw.process.wait() == -9
            try:
                await eventually(lambda: not alive(servers), 10, "the killed gateway's MCP servers exiting")
            except AssertionError:
                raise AssertionError(f"left running after kill -9: {describe(alive(servers))}") from None

    path = sqlite_file(url)
    if path is not None:
        assert integrity(path) == ["ok"]

    async with gateway_process(env) as again:
        await check_interrupted(again, run_id, before)
        await check_serves(again)
        assert await again.sigterm() == 0, again.log_tail()

    if path is not None:
        assert integrity(path) == ["ok"]


async def test_a_second_start_exits_2_and_leaves_the_running_gateway_alone(
    env: dict[str, str], mock: MockLMStudio
) -> None:
    """Issue 29: `serve` started again in the same folder (same store and instance id) while a background run is
    in flight, on the same port and on another one: each exits 2 with a one-line message before touching the
    store; the first gateway's run completes and its record and events are intact."""
    task = "Held " + script(calls=[[TIME_CALL]], hold="second-start", final="done")
    async with gateway_process(env) as gw:
        accepted = await gw.client.post("/v1/runs", json={"task": task, "mcp_servers": ["time"]})
        assert accepted.status_code == 202, accepted.text
        run_id = accepted.json()["run_id"]
        await mock.until_held("second-start")
        cwd = Path(gw.log_path).parent
        clean = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
        for port, says in ((gw.port, "cannot listen on"), (free_port(), "another lmstudio-bridge process")):
            with tempfile.TemporaryFile() as log:
                second = await spawn_python(
                    "app.cli", "serve", "--port", str(port), log=log, env={**clean, **env}, cwd=cwd
                )
                assert await asyncio.wait_for(second.wait(), 60) == 2
                log.seek(0)
                out = log.read().decode()
            assert says in out and "Traceback" not in out and len(out.strip().splitlines()) == 1, out
        await mock.release("second-start")

        async def finished() -> dict[str, Any] | None:
            record: dict[str, Any] = (await gw.client.get(f"/v1/runs/{run_id}")).json()
            return record if record["finished_at"] else None

        record = await eventually(finished, 30, "the first gateway's run finished")
        assert record["status"] == "completed" and record["output"] == "done" and not record["incomplete"], record
        assert len(record["steps"]) == 1 and record["error"] is None, record
        events = await sse_with_ids(gw.client, f"/v1/runs/{run_id}/events")
        assert [name for _, name, _ in events if name in ("run.completed", "run.failed")] == ["run.completed"]
        assert (await gw.client.get("/readyz")).status_code == 200
        logged = gw.log_tail(200_000)
        assert '"level": "ERROR"' not in logged and "interrupted" not in logged, logged
        assert await gw.sigterm() == 0, gw.log_tail()
