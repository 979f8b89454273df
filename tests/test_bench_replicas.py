"""bench/replicas.py (`python -m bench replicas`, docs/performance.md "Gateway replicas on one PostgreSQL") run
small: its own PostgreSQL and three real gateway processes, one, two and three replicas measured in every round in a
balanced order, each configuration's runs spread over its replicas, the rows of each."""

from __future__ import annotations

import itertools

import pytest

from bench import replicas

RUNS_PER_ROUND = 30  # divisible by 2 and 3: the round-robin gives each replica the same share
WARMUP = 5


def test_each_configuration_comes_at_each_place_and_after_each_other_alike() -> None:
    orders = ["".join(str(n) for n in replicas._order([1, 2, 3], r)) for r in range(replicas.ROUNDS)]
    assert orders == ["123", "231", "312", "321", "132", "213"]
    for n in "123":
        assert sorted(order.index(n) for order in orders) == [0, 0, 1, 1, 2, 2]
    pairs = [a + b for order in orders for a, b in itertools.pairwise(order)]
    assert sorted(pairs) == sorted(2 * ["12", "13", "21", "23", "31", "32"])


async def test_the_bench_runs_small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replicas, "WARMUP", WARMUP)
    monkeypatch.setattr(replicas, "RUNS_PER_ROUND", RUNS_PER_ROUND)
    result = await replicas.run()
    rows = result["rows"]
    assert isinstance(rows, list)
    values = {measure: value for measure, value, _ in rows}
    per_config = replicas.ROUNDS * RUNS_PER_ROUND
    assert values["errors (non-200, transport errors, runs not completed)"] == f"0 of {3 * per_config:,} (met)"
    for label in ("one replica", "two replicas", "three replicas"):
        assert values[f"{label}: runs/s (per round: lowest-highest)"].endswith(")")
        assert values[f"{label}: cores busy per gateway process (A; B; C; a process runs its event loop on one)"]
    assert values["three replicas / one: runs/s (per round: lowest-highest)"].endswith(")")
    # each replica: its check run, its warm-up, and its share of every configuration it is part of
    stored = {
        "bench-replica-a": 1 + WARMUP + per_config + per_config // 2 + per_config // 3,
        "bench-replica-b": 1 + WARMUP + per_config // 2 + per_config // 3,
        "bench-replica-c": 1 + WARMUP + per_config // 3,
    }
    assert values["runs in the shared store, by BRIDGE_INSTANCE_ID (incl. warm-up)"] == ", ".join(
        f"{instance}: {count:,}" for instance, count in stored.items()
    )
