"""Running the suite on one model: each task an ordinary run through `AgentService` (the path of
`/v1/autonomous`), over the eval's own MCP servers in a scratch directory, with a fixed seed and temperature;
each run stored like any other, and checked by its task's program."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.access import Access
from services.agent import AgentService, RunSpec
from services.agent.aids import Aids
from services.agent.ports import Tools
from services.errors import BridgeError
from services.evals.scorecard import TaskOutcome, outcome_of
from services.evals.servers import ScratchDir, eval_servers
from services.evals.tasks import EvalTask, Evidence, Prepared
from services.mcp import MCPPool, MCPServerConfig

log = logging.getLogger("lmstudio_bridge.evals")

# text added to a task's prompt (tests: the mock LM Studio's `[[mock ...]]` script for that task)
Suffix = Callable[[EvalTask, Prepared], str]
OnTask = Callable[[TaskOutcome], Awaitable[None]]


@dataclass(slots=True)
class EvalPlan:
    """What one eval runs: a model (its resolved id), the aids, the tasks, the sampling it is held to."""

    model: str
    tasks: list[EvalTask]
    aids: Aids = field(default_factory=Aids)
    seed: int = 42
    temperature: float = 0.0
    max_tokens: int | None = None
    timeout_s: float | None = None
    access: Access | None = None
    suffix: Suffix | None = None


class EvalRunner:
    """Runs plans; `make_pool` builds an MCP pool of the eval's servers, `make_agent` an agent service over it
    (the gateway's LM Studio, catalog, run limiter, settings and run store)."""

    def __init__(
        self,
        make_pool: Callable[[dict[str, MCPServerConfig]], MCPPool],
        make_agent: Callable[[Tools], AgentService],
        search: list[Path] | None = None,
    ) -> None:
        self._make_pool = make_pool
        self._make_agent = make_agent
        self._search = search

    async def run(self, plan: EvalPlan, on_task: OnTask | None = None) -> list[TaskOutcome]:
        """Every task of the plan in order; a task whose run fails counts as not done (its run records why)."""
        outcomes: list[TaskOutcome] = []
        with ScratchDir() as scratch:
            pool = self._make_pool(eval_servers(scratch, self._search))
            await pool.start(warmup=False)
            try:
                agent = self._make_agent(pool)
                for task in plan.tasks:
                    prepared = task.prepare(scratch, random.Random(f"{plan.seed}:{task.name}"))
                    prompt = prepared.prompt + (plan.suffix(task, prepared) if plan.suffix else "")
                    spec = RunSpec(
                        task=prompt,
                        model=plan.model,
                        mcp_servers=list(task.servers),
                        max_rounds=task.max_rounds,
                        max_tokens=plan.max_tokens,
                        temperature=plan.temperature,
                        timeout_s=plan.timeout_s,
                        extra_body={"seed": plan.seed},
                        access=plan.access,
                        aids=plan.aids,
                    )
                    run = await agent.open(spec)  # a model or server that cannot be had ends the eval
                    try:
                        result = await run.execute()
                    except BridgeError as exc:
                        outcome = TaskOutcome(task.name, task.kind, run.run_id, "failed", False, exc.detail)
                    else:
                        verdict = task.check(Evidence(result, scratch, prepared.facts))
                        outcome = outcome_of(task.name, task.kind, result, verdict.passed, verdict.reason)
                    log.info(
                        "eval task %s: %s (%s)", task.name, "passed" if outcome.passed else "failed", outcome.reason
                    )
                    outcomes.append(outcome)
                    if on_task is not None:
                        await on_task(outcome)
            finally:
                await pool.aclose()
        return outcomes
