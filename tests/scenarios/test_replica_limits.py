"""Per-key limits across gateway replicas: three real gateway processes on one PostgreSQL store, one keys file.

A key with `requests_per_minute: 30` gets 30 requests across the three (plus what its bucket refills while the
test runs, half a request a second), not 90; a key with `max_concurrent_runs: 2` runs two runs at once across
the three, and a third starts once one of them ended.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import assert_problem, eventually, finished, script
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.scenarios.conftest import GatewayProcess, gateway_process, process_env

pytestmark = pytest.mark.timeout(180)

RATED, RATED_KEY = "rated", "rated-key-0123456789"
TWO, TWO_KEY = "two-runs", "two-runs-key-0123456789"
HANG = "Hang " + script(answer="late", fault={"kind": "hang"})  # LM Studio never answers: ends when cancelled


@pytest.fixture
def env(mock: MockLMStudio, postgres_url: str, tmp_path: Path) -> dict[str, str]:
    keys = tmp_path / "keys.json"
    entries = [
        {"name": RATED, "key": RATED_KEY, "requests_per_minute": 30},
        {"name": TWO, "key": TWO_KEY, "max_concurrent_runs": 2},
    ]
    keys.write_text(json.dumps({"keys": entries}))
    return process_env(mock, postgres_url, tmp_path, BRIDGE_KEYS_FILE=str(keys), BRIDGE_LEASE_S="2")


@contextlib.asynccontextmanager
async def three(env: dict[str, str]) -> AsyncIterator[list[GatewayProcess]]:
    """Three replicas, started one after the other (each checks on exit that it left no process behind)."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(gateway_process(env, BRIDGE_INSTANCE_ID=f"limits-{name}")) for name in "abc"
        ]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_keys_limits_hold_across_three_replicas(env: dict[str, str]) -> None:
    async with three(env) as replicas:
        started = time.monotonic()
        statuses = []
        for index in range(60):  # round robin, as a Service without affinity spreads them
            gw = replicas[index % 3]
            response = await gw.client.get("/v1/runs?limit=1", headers=bearer(RATED_KEY))
            statuses.append(response.status_code)
            if response.status_code == 429:
                body = assert_problem(response, 429, "key_rate_limited")
                assert "30 requests a minute" in body["detail"] and int(response.headers["retry-after"]) >= 1
        elapsed = time.monotonic() - started
        accepted = statuses.count(200)
        assert set(statuses) == {200, 429}, statuses
        assert 30 <= accepted <= 30 + math.ceil(elapsed / 2) + 1, (accepted, elapsed)  # refill: 0.5 a second
        print(f"requests_per_minute 30 across 3 replicas: {accepted} of 60 accepted in {elapsed:.1f} s")

        a, b, c = replicas
        headers = bearer(TWO_KEY)
        body = {"task": HANG, "mcp_servers": []}
        first = await a.client.post("/v1/runs", json=body, headers=headers)
        second = await b.client.post("/v1/runs", json=body, headers=headers)
        assert first.status_code == second.status_code == 202, (first.text, second.text)
        refused = await c.client.post("/v1/runs", json=body, headers=headers)
        assert "may run 2 run(s) at once; 2 are in flight" in assert_problem(refused, 429, "key_rate_limited")["detail"]
        run_id = first.json()["run_id"]
        assert (await c.client.post(f"/v1/runs/{run_id}/cancel", headers=headers)).status_code == 202
        assert (await finished(c.client, run_id, headers=headers))["status"] == "cancelled"

        async def third_starts() -> str | None:
            response = await c.client.post("/v1/runs", json=body, headers=headers)
            return str(response.json()["run_id"]) if response.status_code == 202 else None

        third = await eventually(third_starts, 10, "a run of the key starting once one of its two ended")
        for gw, rid in ((b, second.json()["run_id"]), (c, third)):
            assert (await gw.client.post(f"/v1/runs/{rid}/cancel", headers=headers)).status_code == 202
        metrics = (await a.client.get("/metrics")).text
        assert 'bridge_key_limit_checks_total{limit="runs",outcome="allowed"}' in metrics, metrics[-3000:]
