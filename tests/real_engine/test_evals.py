"""A bounded eval on the real engine (llama-server + SmolLM2-135M): three tasks of the suite without aids and with
the nudge, through the gateway's loop, each task a stored run; and `lmstudio-bridge eval` against the engine.
These assert the machinery (statuses, counts, stored runs, the nudge's second ask), never what the tiny model
knows: its scores are the bench's (docs/local-models.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.gateway import BridgeState, MCPSetup, open_gateway
from services.agent.aids import NUDGE_WARNING, Aids
from services.evals import Summary
from tests.app.test_cli import cli
from tests.conftest import make_settings
from tests.real_engine.engine import RealEngine

pytestmark = [pytest.mark.real_engine, pytest.mark.timeout(900)]
TASKS = ["time_utc", "read_secret", "no_tool_math"]
HONEST_END = {"completed", "max_rounds", "loop", "length", "timeout", "context_exceeded"}
MAX_TOKENS = 64


@pytest.fixture(scope="module")
async def gateway(real_engine: RealEngine) -> AsyncIterator[BridgeState]:
    settings = make_settings(lmstudio_base_url=real_engine.base_url, log_level="WARNING")
    async with open_gateway(settings, MCPSetup(None, {}), warmup=False) as state:
        yield state


@pytest.mark.parametrize("aids", [Aids(), Aids(nudge=True)], ids=["no aids", "nudge"])
async def test_a_bounded_eval_scores_the_real_model_and_stores_each_run(
    gateway: BridgeState, real_engine: RealEngine, aids: Aids
) -> None:
    plan = await gateway.evals.plan(real_engine.model_id, aids, TASKS, max_tokens=MAX_TOKENS, timeout_s=300)
    record = await gateway.evals.run(plan)
    assert record.status == "completed", record.error
    assert [t.task for t in record.tasks] == ["time_utc", "read_secret", "no_tool_math"]
    summary = record.summary
    assert isinstance(summary, Summary) and summary.tasks == 3
    assert summary.executed_calls <= summary.valid_calls <= summary.tool_calls
    assert sum(summary.by_status.values()) == 3 and set(summary.by_status) <= HONEST_END
    assert summary.tool_score == round(summary.completed / 3, 3) and summary.tokens_per_task > 0
    for outcome in record.tasks:
        run = await gateway.runs.get(str(outcome.run_id))
        assert (run.status, len(run.steps), run.model) == (outcome.status, outcome.tool_calls, real_engine.model_id)
        assert run.options["aids"] == aids.names and run.options["lmstudio"] == {"seed": 42}
        assert run.options["temperature"] == 0.0 and run.options["max_tokens"] == MAX_TOKENS
        if aids.nudge and outcome.task != "no_tool_math":  # round 1 made a call, or the model was asked again
            assert NUDGE_WARNING in run.warnings or any(s.round == 1 for s in run.steps), run
    stored = await gateway.evals.get(record.eval_id)
    assert stored.summary == summary and stored.tasks == record.tasks
    models = {m.id: m for m in (await gateway.status.models()).data}
    assert models[real_engine.model_id].tool_score == summary.tool_score


def test_the_eval_command_against_the_real_engine(real_engine: RealEngine, tmp_path: Path) -> None:
    done = cli(
        "eval", "--model", real_engine.model_id, "--host", real_engine.base_url, "--tasks", "time_utc",
        "--max-tokens", str(MAX_TOKENS), env={}, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"eval of {real_engine.model_id} with no aids: 1 tasks"
    assert f"| {real_engine.model_id} (no aids) | " in done.stdout
