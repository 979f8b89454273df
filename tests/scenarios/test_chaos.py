"""Replicas killed under load (issue 33), bounded for `make test`: three gateway processes on one PostgreSQL, at
least 24 background runs of three tool rounds each (more until the kills are done) against a server that records
every execution, the replica with the most runs in flight killed with SIGKILL every 4 s (three times) and started
again. Every accepted run ends `completed` or `interrupted` in the store, no tool call runs twice nor after its
run was claimed, every follower that reconnects with Last-Event-ID reads every event once, approvals sent to
another replica take effect (tests/scenarios/chaos.py; the long version is `make soak`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mock_lmstudio.fixture import MockLMStudio
from tests.scenarios.chaos import Chaos, ChaosConfig, environment

pytestmark = pytest.mark.timeout(240)


async def test_replicas_killed_under_load_lose_nothing(mock: MockLMStudio, postgres_url: str, tmp_path: Path) -> None:
    cfg = ChaosConfig(deadline_s=120)
    async with Chaos(cfg, environment(mock.base_url, postgres_url, tmp_path, cfg.lease_s), tmp_path) as chaos:
        out = await chaos.run()
    print(
        f"chaos: {len(out.accepted)} runs accepted ({len(out.uncertain)} unanswered), {out.statuses}, "
        f"{len(out.kills)} kills, {out.executions} tool executions, {len(out.followed)} followed with "
        f"{out.reconnects} reconnects, {len(out.approvals)} approvals ({sorted(out.approvals.values())}), "
        f"{out.duration_s:.1f} s"
    )
    assert not out.problems, "\n".join(out.problems[:30])
    assert len(out.kills) == cfg.max_kills
    assert len(out.accepted) + len(out.uncertain) >= cfg.runs and sum(out.statuses.values()) == len(out.accepted)
    assert out.statuses.get("completed", 0) > 0 and out.statuses.get("interrupted", 0) > 0 and out.approvals
