"""No secret reaches the run store (or the log): a real gateway process with an API key, an LM Studio
token, MCP env values and (PostgreSQL) a database password runs tasks whose text and tool outputs hold
them all; then every column of every row of every table is scanned. Known secrets are stored `[REDACTED]`.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from services.runs import sqlite_path
from tests.conftest import make_settings, served
from tests.helpers import REPO, call, eventually, mcp_servers_json, read_sse, script
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.postgres import PostgresCluster
from tests.scenarios.conftest import GatewayProcess, assert_run, gateway_process

pytestmark = pytest.mark.timeout(180)

REDACTED = "[REDACTED]"
MODEL = "qwen/qwen3-4b"
SECRET_ENV = "BRIDGE_TEST_SECRET"  # the `everything` server's env: its get-env tool prints it


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class Secrets:
    """The values that must never be stored or logged."""

    def __init__(self, db_password: str | None) -> None:
        self.api_key = fresh("sk-bridge-key")
        self.token = fresh("lmstudio-token")
        self.mcp_env = fresh("mcp-env-secret")
        self.db_password = db_password

    def all(self) -> dict[str, str]:
        values = {"api_key": self.api_key, "token": self.token, "mcp_env": self.mcp_env}
        if self.db_password:
            values["db_password"] = self.db_password
        return values

    def sentence(self) -> str:
        return " ".join(f"{name}={value}" for name, value in self.all().items())

    def found_in(self, text: str) -> list[str]:
        return [name for name, value in self.all().items() if value in text]


class Store:
    """Where the gateway's store is, and how to read every row of it back."""

    def __init__(self, url: str, sqlite_file: Path | None, dsn: str | None) -> None:
        self.url, self.sqlite_file, self.dsn = url, sqlite_file, dsn

    async def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table, as tuples of column values."""
        if self.sqlite_file is not None:
            with sqlite3.connect(self.sqlite_file) as conn:
                names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                return {name: list(conn.execute(f'SELECT * FROM "{name}"')) for name in names}
        assert self.dsn is not None
        conn = await asyncpg.connect(self.dsn)
        try:
            names = [
                r["table_name"]
                for r in await conn.fetch(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                )
            ]
            return {name: [tuple(r.values()) for r in await conn.fetch(f'SELECT * FROM "{name}"')] for name in names}
        finally:
            await conn.close()

    def raw_files(self) -> Iterator[Path]:
        """The SQLite file and its WAL / shared-memory files (free pages and old WAL frames included)."""
        if self.sqlite_file is not None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                path = Path(f"{self.sqlite_file}{suffix}")
                if path.exists():
                    yield path


@pytest.fixture
def store(database_url: str, request: pytest.FixtureRequest) -> Store:
    path = sqlite_path(database_url)
    if path is not None:
        return Store(database_url, Path(path), None)
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    plain = urlsplit(database_url)
    # the cluster trusts local connections: the password is never checked, but the gateway knows it is one
    with_password = plain._replace(netloc=f"{plain.username}:{fresh('dbpw')}@{plain.hostname}:{plain.port}")
    return Store(urlunsplit(with_password), None, cluster.dsn_for(plain.path.lstrip("/")))


@pytest.fixture
def secrets(store: Store) -> Secrets:
    return Secrets(urlsplit(store.url).password)


@pytest.fixture
def env(mock: MockLMStudio, store: Store, secrets: Secrets, tmp_path: Path) -> dict[str, str]:
    servers = mcp_servers_json(str(REPO))["mcpServers"]
    mcp_json = tmp_path / "mcp.json"
    config = {
        "fault": {**servers["fault"], "env": {"FAULT_SECRET": secrets.mcp_env}},
        "everything": {**servers["everything"], "env": {SECRET_ENV: secrets.mcp_env}},
    }
    mcp_json.write_text(json.dumps({"mcpServers": config}))
    return {
        "LMSTUDIO_BASE_URL": mock.base_url,
        "LMSTUDIO_API_TOKEN": secrets.token,
        "BRIDGE_API_KEYS": secrets.api_key,
        "MCP_CONFIG": str(mcp_json),
        "BRIDGE_DATABASE_URL": store.url,
        "BRIDGE_LOG_LEVEL": "DEBUG",  # as much log output as there is, to look for the secrets in
        "BRIDGE_TOOL_OUTPUT_MAX_CHARS": "200000",  # get-env prints the whole environment: keep it whole
    }


def secret_calls(secrets: Secrets) -> list[dict[str, Any]]:
    """Tool calls whose arguments and outputs carry the secrets: an echo, a tool error, the MCP env."""
    return [
        call("fault__echo", {"text": f"echoed {secrets.sentence()}"}),
        call("fault__fail", {"message": f"failed with {secrets.sentence()}"}),
        call("everything__get-env", {}),
    ]


def check_steps(steps: list[dict[str, Any]], secrets: Secrets) -> None:
    """The three tool calls ran: the echo and the environment came back (the client sees them)."""
    by_tool = {step["tool"]: step for step in steps}  # parallel calls: in the order they ended
    assert len(steps) == 3 and set(by_tool) == {"echo", "fail", "get-env"}, [s["name"] for s in steps]
    echo, fail, env = by_tool["echo"], by_tool["fail"], by_tool["get-env"]
    assert (echo["tool"], echo["is_error"]) == ("echo", False), echo
    assert (fail["tool"], fail["is_error"]) == ("fail", True), fail
    assert (env["tool"], env["is_error"]) == ("get-env", False), env
    assert SECRET_ENV in env["output"], env["output"][:500]


async def run_tasks(gw: GatewayProcess, secrets: Secrets) -> list[str]:
    """Every kind of stored run, each with the secrets in its task, options and tool traffic; their run ids."""
    key = {"Authorization": f"Bearer {secrets.api_key}"}
    servers = ["fault", "everything"]
    calls = secret_calls(secrets)
    ids: list[str] = []

    # refused without the key: auth is on
    refused = await gw.client.post("/v1/autonomous", json={"task": "x"})
    assert refused.status_code == 401, refused.text

    # 1. synchronous /v1/autonomous, the secrets also in the system prompt
    body: dict[str, Any] = {
        "task": f"sync {secrets.sentence()} " + script(calls=[calls]),
        "mcp_servers": servers,
        "system_prompt": f"Never say {secrets.sentence()}",
    }
    result = assert_run(await gw.client.post("/v1/autonomous", json=body, headers=key), "completed")
    check_steps(result["steps"], secrets)
    ids.append(result["run_id"])

    # 2. streamed /v1/autonomous
    body = {"task": f"stream {secrets.sentence()} " + script(calls=[calls]), "mcp_servers": servers, "stream": True}
    async with gw.client.stream("POST", "/v1/autonomous", json=body, headers=key) as response:
        assert response.status_code == 200
        events = await read_sse(response)
    assert events[-1][0] == "run.completed", events[-1]
    ids.append(events[-1][1]["run_id"])

    # 3. a background run (POST /v1/runs), followed to its end
    body = {"task": f"background {secrets.sentence()} " + script(calls=[calls]), "mcp_servers": servers}
    accepted = await gw.client.post("/v1/runs", json=body, headers=key)
    assert accepted.status_code == 202, accepted.text
    run_id = accepted.json()["run_id"]

    async def finished() -> dict[str, Any] | None:
        record: dict[str, Any] = (await gw.client.get(f"/v1/runs/{run_id}", headers=key)).json()
        return record if record["status"] not in ("queued", "running") else None

    record = await eventually(finished, 30, "the background run ended")
    assert record["status"] == "completed", record
    check_steps(record["steps"], secrets)
    ids.append(run_id)

    # 4. chat completions with MCP servers (a stored run too), the secrets in a system and a user message
    chat = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": f"system {secrets.sentence()}"},
            {"role": "user", "content": f"chat {secrets.sentence()} " + script(calls=[calls])},
        ],
        "mcp_servers": servers,
    }
    answer = await gw.client.post("/v1/chat/completions", json=chat, headers=key)
    assert answer.status_code == 200, answer.text

    # 5. a run that fails: its problem document is stored too
    failing = {"task": f"failing {secrets.sentence()} " + script(fault={"kind": "status", "status": 500})}
    failed = await gw.client.post("/v1/autonomous", json={**failing, "mcp_servers": []}, headers=key)
    assert failed.status_code == 502, failed.text

    listed = await gw.client.get("/v1/runs", params={"limit": 50}, headers=key)
    assert listed.status_code == 200, listed.text
    stored = {r["run_id"]: r for r in listed.json()["data"]}
    assert set(ids) <= set(stored), (ids, list(stored))
    assert len(stored) == 5, [(r["task"][:40], r["status"]) for r in stored.values()]
    assert sorted(r["status"] for r in stored.values()) == ["completed"] * 4 + ["failed"]
    return list(stored)


async def test_no_secret_reaches_the_store_or_the_log(store: Store, secrets: Secrets, env: dict[str, str]) -> None:
    key = {"Authorization": f"Bearer {secrets.api_key}"}
    async with gateway_process(env) as gw:
        run_ids = await run_tasks(gw, secrets)
        # what the API gives back from the store is redacted
        for run_id in run_ids:
            record = await gw.client.get(f"/v1/runs/{run_id}", headers=key)
            assert not secrets.found_in(record.text), (run_id, secrets.found_in(record.text))
            assert REDACTED in record.json()["task"], record.json()["task"]
            events = await gw.client.get(f"/v1/runs/{run_id}/events", headers=key)
            assert not secrets.found_in(events.text), (run_id, secrets.found_in(events.text))
        assert await gw.sigterm() == 0, gw.log_tail()
        log = gw.log_tail(10_000_000)
    assert log, "the gateway logged nothing at DEBUG"
    assert not secrets.found_in(log), [line for line in log.splitlines() if secrets.found_in(line)][:5]

    rows = await store.rows()
    assert {"runs", "run_events"} <= set(rows), list(rows)
    assert len(rows["runs"]) == 5 and len(rows["run_events"]) > 20, {t: len(r) for t, r in rows.items()}
    leaks = [
        (table, index, column, secrets.found_in(str(value)))
        for table, table_rows in rows.items()
        for index, row in enumerate(table_rows)
        for column, value in enumerate(row)
        if secrets.found_in(str(value))
    ]
    assert not leaks, leaks
    everything = "\n".join(str(value) for table_rows in rows.values() for row in table_rows for value in row)
    # the scan saw the secrets' places: task, tool output of the MCP env, error text, all redacted
    assert everything.count(REDACTED) >= 5 * len(secrets.all())
    assert SECRET_ENV in everything

    for path in store.raw_files():  # no copy in free pages or WAL frames either
        data = path.read_bytes()
        found = [name for name, value in secrets.all().items() if value.encode() in data]
        assert not found, (path.name, found)


def encodings(secret: str) -> dict[str, str]:
    """The forms a secret takes in stored JSON text: as is, and JSON-escaped (ASCII-only or not)."""
    return {"raw": secret, "json": json.dumps(secret)[1:-1], "json_utf8": json.dumps(secret, ensure_ascii=False)[1:-1]}


async def test_secret_with_json_escaped_characters_is_redacted(mock: MockLMStudio, tmp_path: Path) -> None:
    """A secret with a quote, a backslash and a non-ASCII character: stored JSON escapes it, and the
    escaped form is redacted too (the API gives back no copy of it either)."""
    secret = f'pa"ss\\w\u00f6rd-{uuid.uuid4().hex[:12]}'
    fault = mcp_servers_json(str(REPO))["mcpServers"]["fault"]
    mcp_json = tmp_path / "mcp.json"
    mcp_json.write_text(json.dumps({"mcpServers": {"fault": {**fault, "env": {"FAULT_SECRET": secret}}}}))
    path = tmp_path / "runs.db"
    settings = make_settings(
        lmstudio_base_url=mock.base_url, mcp_config=str(mcp_json), database_url=f"sqlite+aiosqlite:///{path}"
    )
    async with served(settings, timeout=60) as client:
        task = "echo it " + script(calls=[[call("fault__echo", {"text": f"the secret is {secret}"})]])
        result = assert_run(
            await client.post("/v1/autonomous", json={"task": task, "mcp_servers": ["fault"]}), "completed"
        )
        record = (await client.get(f"/v1/runs/{result['run_id']}")).json()
    assert secret not in record["steps"][0]["output"], record["steps"][0]["output"]
    store = Store(settings.database_url, path, None)
    stored = "\n".join(str(v) for rows in (await store.rows()).values() for row in rows for v in row)
    found = {form: stored.count(text) for form, text in encodings(secret).items() if text in stored}
    assert not found, found
