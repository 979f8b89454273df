"""`lmstudio-bridge eval`: the tool-use suite on chosen models, through the gateway's own loop; prints each task
as it ends and the scorecard, and stores the eval (and each task's run) in the run store."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from app.gateway import MCPSetup, open_gateway
from app.settings import Settings, load_settings
from app.telemetry import configure_logging
from services.agent.aids import AID_NAMES, Aids
from services.errors import BridgeError
from services.evals import EvalRecord, TaskOutcome, table
from services.evals.records import suggested_profiles
from services.lmstudio.hosts import normal_url


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings()
    update: dict[str, Any] = {"instance_id": f"{settings.instance_id}:eval"}
    if args.host:  # this LM Studio (or llama-server) alone
        update |= {"lmstudio_base_url": normal_url(args.host), "lmstudio_base_urls": [], "lmstudio_hosts_file": None}
    return settings.model_copy(update=update)


def _aid_settings(args: argparse.Namespace) -> list[Aids]:
    if args.compare_aids:
        return [Aids(), *(Aids.of([name]) for name in AID_NAMES)]
    return [Aids.of(a.strip() for a in (args.aids or "").split(",") if a.strip())]


def _label(record: EvalRecord) -> str:
    return f"{record.model} ({'+'.join(record.aids) or 'no aids'})"


async def run_evals(args: argparse.Namespace, settings: Settings) -> int:
    async def show(outcome: TaskOutcome) -> None:
        mark = "pass" if outcome.passed else "FAIL"
        print(f"  [{mark}] {outcome.task:<16} {outcome.status:<10} {outcome.reason}  ({outcome.run_id})", flush=True)

    records: list[EvalRecord] = []
    async with open_gateway(settings, MCPSetup(None, {}), warmup=False) as gateway:
        for model in args.model:
            for aids in _aid_settings(args):
                plan = await gateway.evals.plan(
                    model, aids, args.tasks, max_tokens=args.max_tokens, timeout_s=args.timeout_s
                )
                print(f"eval of {plan.model} with {'+'.join(aids.names) or 'no aids'}: {len(plan.tasks)} tasks")
                record = await gateway.evals.run(plan, show if args.verbose else None)
                print(f"  -> {record.eval_id}: {record.status}" + (f" ({record.error})" if record.error else ""))
                records.append(record)
    rows = [(_label(r), r.summary) for r in records if r.summary is not None]
    print()
    print(table(rows))
    if args.compare_aids:
        profiles = suggested_profiles(records)
        entries = ",".join(f"{model}={'+'.join(aids)}" for model, aids in profiles.items())
        print(f"\nsuggested profile (the aids that each lifted the model): BRIDGE_AID_PROFILES={entries}")
    return 0 if all(r.status == "completed" for r in records) else 1


def eval_command(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging("WARNING", [])
    try:
        return asyncio.run(run_evals(args, settings))
    except BridgeError as exc:
        print(f"eval failed: {exc.detail}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"eval: {exc}", file=sys.stderr)
        return 2


def add_eval_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="run the tool-use suite on models and print their scorecards")
    p.add_argument("--model", action="append", required=True, help="model id or alias (repeat for several)")
    p.add_argument("--host", help="the LM Studio (or llama-server) URL to use instead of the configured hosts")
    p.add_argument("--aids", help=f"aids to switch on, comma-separated ({', '.join(AID_NAMES)})")
    p.add_argument("--compare-aids", action="store_true", help="each model without aids, then with each aid alone")
    p.add_argument("--tasks", nargs="+", help="task names or kinds (default: the whole suite)")
    p.add_argument("--max-tokens", type=int, help="max_tokens of each call")
    p.add_argument("--timeout-s", type=float, help="deadline of each task's run")
    p.add_argument("--quiet", dest="verbose", action="store_false", help="print the scorecard only")
    p.set_defaults(func=eval_command, verbose=True)
