"""The run store failing under a running gateway (issue 29): a database that refuses writes (SQLite's own
"database or disk is full", from a page limit on the writer's connection) and a database file deleted under
it. Every run answered 202 stays readable with a terminal status or `incomplete: true`; none stays `running`;
`/readyz` says how the store is."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import event, text

from app.main import create_app
from services.runs import RunStore
from tests.conftest import make_settings
from tests.helpers import eventually, script
from tests.mock_lmstudio.fixture import MockLMStudio

FINISHED = {"completed", "failed", "cancelled", "timeout", "interrupted", "max_rounds", "length", "loop"}
BIG = "x" * 19_000  # a task (and its echoed answer) that needs new pages of the database


@contextlib.asynccontextmanager
async def gateway(mock: MockLMStudio, db: Path) -> AsyncIterator[tuple[httpx.AsyncClient, RunStore]]:
    app = create_app(make_settings(lmstudio_base_url=mock.base_url, database_url=f"sqlite+aiosqlite:///{db}"))
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge", timeout=30) as client:
            yield client, app.state.bridge.store


async def start(client: httpx.AsyncClient, task: str) -> httpx.Response:
    return await client.post("/v1/runs", json={"task": task, "mcp_servers": []})


async def readable_and_ended(client: httpx.AsyncClient, run_ids: list[str]) -> list[dict[str, Any]] | None:
    """The runs' records, each readable (200), once every one of them has ended; None while one runs on."""
    records = []
    for run_id in run_ids:
        response = await client.get(f"/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        records.append(response.json())
    return records if all(r["status"] in FINISHED for r in records) else None


async def ready(client: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/readyz")).json()
    return body


async def test_a_database_that_refuses_writes_loses_no_accepted_run(mock: MockLMStudio, tmp_path: Path) -> None:
    async with gateway(mock, tmp_path / "runs.db") as (client, store):
        full = {"on": False}

        def page_limit(dbapi_conn: Any, _record: Any) -> None:  # the writer reconnects after a failure
            if full["on"]:
                dbapi_conn.execute("PRAGMA max_page_count = 1")  # clamped to the file's size: it cannot grow

        event.listen(store.writer_engine, "connect", page_limit)
        task = "held " + script(hold="full", answer="y" * 8000)  # accepted before the disk fills; answers need room
        accepted = [(await start(client, task)).json()["run_id"] for _ in range(3)]
        await mock.until_held("full", 3)
        full["on"] = True
        await store.writer._write_plan([(text("PRAGMA max_page_count = 1"), None)])

        answers = [await start(client, f"{BIG} {i} " + script(hold="full")) for i in range(5)]
        assert {a.status_code for a in answers} <= {202, 503}, [a.text for a in answers]
        refused = [a.json() for a in answers if a.status_code == 503]
        assert refused and all(
            p["code"] == "store_unavailable" and "Retry-After" in a.headers
            for a, p in zip([a for a in answers if a.status_code == 503], refused, strict=True)
        )
        accepted += [a.json()["run_id"] for a in answers if a.status_code == 202]
        body = await ready(client)
        assert body["status"] == "not_ready" and body["store"]["ok"] is False, body
        assert "full" in body["store"]["error"], body

        await mock.release("full")  # the runs end while the database still refuses their big answers
        records = await eventually(lambda: readable_and_ended(client, accepted), 30, "every accepted run ended")
        held = [r for r in records if r["incomplete"]]
        assert held, records  # served from memory
        for record in held:
            cancel = await client.post(f"/v1/runs/{record['run_id']}/cancel")
            assert cancel.status_code == 409, cancel.text
            events = (await client.get(f"/v1/runs/{record['run_id']}/events")).text
            assert "event: run.completed" in events, events

        full["on"] = False  # room again
        await store.writer._write_plan([(text("PRAGMA max_page_count = 1073741823"), None)])
        await eventually(lambda: not store.writer.held, 30, "the held runs written back")
        body = await eventually(lambda: _ready_again(client), 30, "/readyz ready again")
        assert body["store"]["ok"] is True
        records = await readable_and_ended(client, accepted)
        assert records is not None and all(r["status"] in ("completed", "length") for r in records), records
        assert {r["run_id"] for r in records if r["incomplete"]} == {r["run_id"] for r in held}


async def _ready_again(client: httpx.AsyncClient) -> dict[str, Any] | None:
    body = await ready(client)
    return body if body["status"] == "ready" else None


async def test_a_deleted_database_file_is_opened_again_and_its_runs_written_back(
    mock: MockLMStudio, tmp_path: Path
) -> None:
    db = tmp_path / "runs.db"
    async with gateway(mock, db) as (client, store):
        before = (await start(client, "before " + script(answer="early"))).json()["run_id"]
        await eventually(lambda: _ended(client, before), 30, "the first run ended")
        accepted = [(await start(client, "held " + script(hold="gone"))).json()["run_id"] for _ in range(2)]
        await mock.until_held("gone", 2)
        await asyncio.to_thread(delete_database, tmp_path)
        await mock.release("gone")
        records = await eventually(lambda: readable_and_ended(client, accepted), 30, "the held runs ended")
        assert all(r["status"] == "completed" and r["incomplete"] for r in records), records
        await eventually(lambda: not store.writer.held, 30, "the store opened again, the runs written back")
        records = await readable_and_ended(client, accepted)  # now from the new file
        assert records is not None and all(r["status"] == "completed" and r["incomplete"] for r in records), records
        assert db.exists()
        after = await start(client, "after " + script(answer="fine"))
        assert after.status_code == 202, after.text
        record = await eventually(lambda: _ended(client, after.json()["run_id"]), 30, "a new run ended")
        assert record["status"] == "completed" and record["output"] == "fine" and not record["incomplete"]
        assert (await client.get(f"/v1/runs/{before}")).status_code == 404  # it went with the deleted file
        assert (await ready(client))["store"]["ok"] is True


async def _ended(client: httpx.AsyncClient, run_id: str) -> dict[str, Any] | None:
    response = await client.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record if record["finished_at"] else None


def delete_database(folder: Path) -> None:
    """`runs.db` and its -wal and -shm files gone, as an operator's `rm runs.db*` does."""
    for path in list(folder.glob("runs.db*")):
        path.unlink()
