"""Every check of the eval suite, on the mock LM Studio with the real MCP servers: each task passes with a
scripted answer that does the work and fails with one that only talks about it (its own words, no evidence)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.gateway import BridgeState, MCPSetup, open_gateway
from services.agent.aids import Aids
from services.evals import SUITE, EvalPlan, TaskOutcome
from services.evals.tasks import EvalTask, Prepared
from tests.conftest import make_settings
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.services.evals.scripts import FAILING, PASSING, Script

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
async def gateway(mock_server: MockLMStudio) -> AsyncIterator[BridgeState]:
    settings = make_settings(lmstudio_base_url=mock_server.base_url, log_level="WARNING")
    async with open_gateway(settings, MCPSetup(None, {}), warmup=False) as state:
        yield state


def test_the_suite_has_twenty_tasks_or_more_and_a_script_of_each_kind_for_each() -> None:
    names = [t.name for t in SUITE]
    assert len(names) >= 20 and len(set(names)) == len(names)
    assert set(PASSING) == set(names) == set(FAILING)
    kinds = {t.kind for t in SUITE}
    assert {"time", "read", "write", "memory", "chain", "no_tool", "recovery", "window"} <= kinds


async def _outcomes(gateway: BridgeState, scripts: dict[str, Script]) -> dict[str, TaskOutcome]:
    def suffix(task: EvalTask, prepared: Prepared) -> str:
        return " " + scripts[task.name](prepared.facts)

    plan = await gateway.evals.plan("qwen/qwen3-4b", Aids(), None, suffix=suffix)
    assert isinstance(plan, EvalPlan) and len(plan.tasks) == len(SUITE)
    return {o.task: o for o in await gateway.evals.runner.run(plan)}


async def test_every_task_passes_when_the_model_does_the_work(gateway: BridgeState) -> None:
    outcomes = await _outcomes(gateway, PASSING)
    failed = {name: (o.status, o.reason) for name, o in outcomes.items() if not o.passed}
    assert not failed
    assert outcomes["read_secret"].executed_calls == 1 and outcomes["no_tool_math"].tool_calls == 0
    assert outcomes["missing_file"].tool_calls == 3 and outcomes["missing_file"].executed_calls == 2


async def test_no_task_passes_on_words_alone(gateway: BridgeState) -> None:
    outcomes = await _outcomes(gateway, FAILING)
    passed = {name: o.reason for name, o in outcomes.items() if o.passed}
    assert not passed
    assert all(o.status == "completed" for o in outcomes.values())
