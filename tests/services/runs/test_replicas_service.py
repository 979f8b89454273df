"""Two gateways' run services on one store, in one process (SQLite and PostgreSQL): a background run of
replica A is found through B as soon as A has accepted it, cancelled through B whether it runs or waits
for a slot, and waited for through B (the MCP front door's `get_task_result`)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest

from app.gateway import BridgeState, MCPSetup, open_gateway
from services.agent import RunSpec
from services.errors import RunFinishedError
from tests.conftest import make_settings
from tests.helpers import script
from tests.mock_lmstudio.fixture import MockLMStudio

pytestmark = pytest.mark.timeout(60)

SLOW = "slow " + script(answer="late", fault={"kind": "hang"})  # LM Studio never answers: the run ends when cancelled


@pytest.fixture
async def replicas(mock: MockLMStudio, url: str) -> AsyncIterator[tuple[BridgeState, BridgeState]]:
    """Replica A with one run slot (a second run queues) and replica B, on the same store."""
    async with contextlib.AsyncExitStack() as stack:
        states = []
        for name, slots in (("svc-a", 1), ("svc-b", 4)):
            settings = make_settings(
                lmstudio_base_url=mock.base_url,
                database_url=url,
                instance_id=name,
                lease_s=1,
                max_concurrent_runs=slots,
            )
            states.append(await stack.enter_async_context(open_gateway(settings, MCPSetup(None, {}), warmup=False)))
        yield states[0], states[1]


async def test_a_run_of_one_replica_is_found_cancelled_and_waited_for_through_another(
    replicas: tuple[BridgeState, BridgeState],
) -> None:
    a, b = replicas
    running = await a.runs.submit(RunSpec(task=SLOW, mcp_servers=[]))
    assert (await b.runs.get(running.run_id)).status == "running"  # written before A answered
    queued = await a.runs.submit(RunSpec(task=SLOW, mcp_servers=[]))
    assert queued.status == "queued" and (await b.runs.get(queued.run_id)).status == "queued"

    started = time.monotonic()
    waited = await b.runs.wait(running.run_id, 0.6)  # still running: B waits as long as asked
    assert waited.status == "running" and time.monotonic() - started >= 0.6

    await b.runs.cancel(queued.run_id)
    ended = await b.runs.wait(queued.run_id, 10)
    assert (ended.status, ended.output) == ("cancelled", "The run was cancelled before it started.")
    assert queued.run_id not in a.runs.runs

    await b.runs.cancel(running.run_id)
    ended = await b.runs.wait(running.run_id, 10)
    assert ended.status == "cancelled" and ended.output.startswith("The run was cancelled."), ended
    assert running.run_id not in a.runs.runs and a.limiter.in_flight == 0
    for replica in (a, b):
        with pytest.raises(RunFinishedError):
            await replica.runs.cancel(running.run_id)
    events = [e async for e in await b.runs.events(running.run_id, 0)]
    assert events[-1].event == "run.completed" and json.loads(events[-1].data)["status"] == "cancelled"
