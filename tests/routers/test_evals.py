"""/v1/evals and `lmstudio-bridge eval` on the mock LM Studio: an eval runs each task as a stored run, stores its
scorecard, lists it, and gives the model a tool_score in /v1/models; only an admin key may start one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.evals import EvalStore
from services.evals import service as service_module
from services.runs.engines import async_engine
from tests.app.test_cli import cli
from tests.helpers import assert_problem, eventually
from tests.mock_lmstudio.fixture import MockLMStudio

pytestmark = pytest.mark.timeout(120)
ADMIN = {"Authorization": "Bearer admin-key-0123456789abcdef"}
READER = {"Authorization": "Bearer reader-key-0123456789abcdef"}


@pytest.fixture(scope="module")
def gateway_settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    keys = {
        "keys": [
            {"name": "admin", "key": ADMIN["Authorization"][7:], "admin": True},
            {"name": "reader", "key": READER["Authorization"][7:]},
        ]
    }
    path = tmp_path_factory.mktemp("keys") / "keys.yaml"
    path.write_text(yaml.safe_dump(keys))
    return {"keys_file": str(path)}


async def test_an_eval_runs_its_tasks_as_stored_runs_and_scores_the_model(
    bridge: httpx.AsyncClient, mock: MockLMStudio
) -> None:
    body = {"models": ["qwen/qwen3-4b"], "tasks": ["no_tool", "time_utc"], "aids": ["repair"]}
    response = await bridge.post("/v1/evals", json=body, headers=ADMIN)
    assert response.status_code == 202, response.text
    (started,) = response.json()["data"]
    assert (started["status"], started["model"], started["aids"]) == ("queued", "qwen/qwen3-4b", ["repair"])

    async def ended() -> dict[str, Any] | None:
        record = (await bridge.get(f"/v1/evals/{started['eval_id']}", headers=READER)).json()
        return dict(record) if record["status"] not in ("queued", "running") else None

    record = await eventually(ended, 60, "the eval's end")
    assert record["status"] == "completed" and [t["task"] for t in record["tasks"]] == [
        "time_utc",
        "no_tool_math",
        "no_tool_capital",
    ]
    summary = record["summary"]
    # the mock without a script: no tool call, and an echo of the question (no 391, no Paris, no time)
    assert (summary["tasks"], summary["completed"], summary["tool_score"], summary["tool_calls"]) == (3, 0, 0.0, 0)
    run = (await bridge.get(f"/v1/runs/{record['tasks'][0]['run_id']}", headers=ADMIN)).json()
    assert run["status"] == "completed" and run["options"]["aids"] == ["repair"]
    assert run["options"]["lmstudio"] == {"seed": 42} and run["options"]["temperature"] == 0.0
    chat = (await mock.chat_requests())[0]["body"]
    assert (chat["seed"], chat["temperature"]) == (42, 0.0)
    listed = (await bridge.get("/v1/evals", params={"model": "qwen/qwen3-4b"}, headers=READER)).json()["data"]
    assert listed[0]["eval_id"] == started["eval_id"]
    models = {m["id"]: m for m in (await bridge.get("/v1/models", headers=READER)).json()["data"]}
    assert models["qwen/qwen3-4b"]["tool_score"] == 0.0 and models["qwen/qwen3-coder-30b"]["tool_score"] is None


async def test_only_an_admin_key_starts_an_eval_and_bad_requests_are_refused(bridge: httpx.AsyncClient) -> None:
    body = {"models": ["qwen/qwen3-4b"], "tasks": ["no_tool"]}
    assert_problem(await bridge.post("/v1/evals", json=body, headers=READER), 403, "forbidden")
    unknown = {"models": ["qwen/qwen3-4b"], "tasks": ["juggling"]}
    assert_problem(await bridge.post("/v1/evals", json=unknown, headers=ADMIN), 422, "validation_error")
    missing = {"models": ["no/such-model"]}
    assert_problem(await bridge.post("/v1/evals", json=missing, headers=ADMIN), 422, "model_not_found")
    assert_problem(await bridge.get("/v1/evals/eval_nope", headers=ADMIN), 404, "eval_not_found")


async def test_evals_beyond_the_waiting_limit_are_429(
    bridge: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "MAX_WAITING_EVALS", 3)
    body = {"models": ["qwen/qwen3-4b"], "tasks": ["no_tool"], "compare_aids": True}  # 4 evals
    full = assert_problem(await bridge.post("/v1/evals", json=body, headers=ADMIN), 429, "queue_full")
    assert "at most 3" in full["detail"]


async def test_the_eval_command_prints_a_scorecard_and_stores_it(mock_server: MockLMStudio, tmp_path: Path) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path}/runs.db"
    done = cli(
        "eval", "--model", "qwen/qwen3-4b", "--host", mock_server.base_url, "--tasks", "no_tool",
        env={"LMSTUDIO_BASE_URL": "http://127.0.0.1:9", "BRIDGE_DATABASE_URL": database},  # --host wins
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "eval of qwen/qwen3-4b with no aids: 2 tasks"
    assert any(line.startswith("  [FAIL] no_tool_math") and "run_" in line for line in lines)
    assert any(line.startswith("| qwen/qwen3-4b (no aids) | 0/2 | 0.00 |") for line in lines), done.stdout
    engine = async_engine(database)
    try:
        (stored,) = await EvalStore(engine, "reader").newest(5)
        assert (stored.status, stored.model, [t.task for t in stored.tasks]) == (
            "completed",
            "qwen/qwen3-4b",
            ["no_tool_math", "no_tool_capital"],
        )
        assert f"  -> {stored.eval_id}: completed" in lines
    finally:
        await engine.dispose()
