"""`make soak` (`python -m bench.chaos [--runs N]`): the long version of the replica chaos test (issue 33).

Three gateway processes on one throwaway PostgreSQL (tests/postgres.py), the mock LM Studio, `--runs` background
runs of `--rounds` tool rounds each against the counting MCP server, `--concurrency` clients, one replica killed
with SIGKILL every `--kill-every-s` seconds (`--kills` times at most) and started again. The rules and the load
are those of tests/scenarios/chaos.py; this prints the counts and exits 1 when a rule broke.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

from tests.mock_lmstudio.fixture import start_mock
from tests.postgres import PostgresCluster
from tests.scenarios.chaos import Chaos, ChaosConfig, environment


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kill-every-s", type=float, default=4.0)
    parser.add_argument("--kills", type=int, default=15)
    parser.add_argument("--deadline-s", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=33)
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> int:
    cfg = ChaosConfig(
        runs=args.runs,
        concurrency=args.concurrency,
        rounds=args.rounds,
        kill_every_s=args.kill_every_s,
        max_kills=args.kills,
        deadline_s=args.deadline_s,
        seed=args.seed,
    )
    cluster = PostgresCluster().start()
    mock = await start_mock()
    try:
        with tempfile.TemporaryDirectory(prefix="bridge-chaos-") as directory:
            env = environment(mock.base_url, cluster.new_database("chaos"), Path(directory), cfg.lease_s)
            async with Chaos(cfg, env, Path(directory)) as chaos:
                out = await chaos.run()
    finally:
        await mock.stop()
        cluster.stop()
    relayed = sum(1 for target in out.approvals.values() if target.endswith(" 200"))
    print(f"runs accepted: {len(out.accepted)}; POSTs unanswered (their replica died): {len(out.uncertain)}")
    print(f"ended: {out.statuses}; replicas killed: {len(out.kills)}; tool executions: {out.executions}")
    print(f"followed over SSE: {len(out.followed)}, reconnects with Last-Event-ID: {out.reconnects}")
    print(f"approvals sent to a replica other than the follower's: {len(out.approvals)} ({relayed} answered 200)")
    print(f"duration: {out.duration_s:.1f} s; rules broken: {len(out.problems)}")
    for problem in out.problems[:50]:
        print(f"  {problem}")
    return 1 if out.problems else 0


if __name__ == "__main__":
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    sys.exit(asyncio.run(main(parse_args())))
