"""The tool-use eval suite on the real engine (llama-server + SmolLM2-135M), without aids and with each aid alone;
writes the scorecard into docs/local-models.md (between the `evals:begin` / `evals:end` marks) and returns the
summary rows for docs/performance.md.

Run alone: ``nice -n 19 .venv/bin/python -m bench evals --write`` (about 30 min on the shared 2-core machine:
96 runs of up to a few engine calls each).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
from typing import Any

from app.gateway import MCPSetup, open_gateway
from app.settings import Settings
from bench.real_engine import started_engine
from services.agent.aids import AID_NAMES, Aids
from services.evals import EvalRecord, Summary, table
from services.evals.records import suggested_profiles
from tests.helpers import REPO
from tests.real_engine.engine import CONTEXT, GGUF_NAME, SEED, TEMPLATE_NAME, THREADS

DOC = REPO / "docs" / "local-models.md"
BEGIN, END = "<!-- evals:begin -->", "<!-- evals:end -->"
MAX_TOKENS = 96  # per call: the 135M model rambles to any limit; 96 keeps the whole bench near 45 min here
TIMEOUT_S = 240.0


def settings_of(aids: Aids) -> str:
    return "+".join(aids.names) or "no aids"


async def evaluate(base_url: str, model: str) -> list[EvalRecord]:
    records = []
    with tempfile.TemporaryDirectory(prefix="bench-evals-") as directory:
        settings = Settings(
            _env_file=None,
            lmstudio_base_url=base_url,
            log_level="WARNING",
            database_url=f"sqlite+aiosqlite:///{directory}/runs.db",
        )
        async with open_gateway(settings, MCPSetup(None, {}), warmup=False) as gateway:
            for aids in (Aids(), *(Aids.of([name]) for name in AID_NAMES)):
                plan = await gateway.evals.plan(model, aids, None, max_tokens=MAX_TOKENS, timeout_s=TIMEOUT_S)
                record = await gateway.evals.run(plan)
                summary = record.summary or Summary()
                print(f"  evals {settings_of(aids)}: {summary.completed}/{summary.tasks}", flush=True)
                records.append(record)
    return records


def by_task(records: list[EvalRecord]) -> str:
    """Which tasks passed, per aid setting (a column each)."""
    heads = [settings_of(Aids.of(r.aids)) for r in records]
    lines = ["| task | kind | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(records)]
    for outcome in records[0].tasks:
        cells = []
        for record in records:
            found = next((t for t in record.tasks if t.task == outcome.task), None)
            cells.append("—" if found is None else ("**pass**" if found.passed else found.status))
        lines.append(f"| {outcome.task} | {outcome.kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scorecard_block(model: str, records: list[EvalRecord], seconds: float) -> str:
    rows = [(f"{model}, {settings_of(Aids.of(r.aids))}", r.summary or Summary()) for r in records]
    profiles = suggested_profiles(records)
    suggested = ", ".join(f"`{m}={'+'.join(a)}`" for m, a in profiles.items()) or "none"
    return "\n".join(
        [
            BEGIN,
            f"Measured by `nice -n 19 .venv/bin/python -m bench evals --write` on "
            f"{time.strftime('%Y-%m-%d', time.gmtime())} ({seconds / 60:.0f} min): llama.cpp `llama-server` "
            f"(`--jinja`, `{TEMPLATE_NAME}`, seed {SEED}, {THREADS} thread, {CONTEXT}-token context) with "
            f"{GGUF_NAME}; every task with `max_tokens` {MAX_TOKENS}, temperature 0, `seed` 42, the suite's own "
            "`time`, `filesystem` and `memory` servers.",
            "",
            table(rows),
            "",
            by_task(records),
            "",
            f"Profile the scorecard suggests (the aids that each alone completed more tasks than none): {suggested}.",
            END,
        ]
    )


def write_doc(block: str) -> None:
    text = DOC.read_text()
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)


async def run() -> dict[str, Any]:
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        engine = started_engine(stack)
        records = await evaluate(engine.base_url, engine.model_id)
        model = engine.model_id
    seconds = time.monotonic() - started
    write_doc(scorecard_block(model, records, seconds))
    rows = []
    for record in records:
        s = record.summary or Summary()
        rows.append(
            (
                f"eval suite, {settings_of(Aids.of(record.aids))}: tasks completed / calls made, valid, executed",
                f"{s.completed}/{s.tasks} / {s.tool_calls}, {s.valid_calls}, {s.executed_calls}",
                "report",
            )
        )
    return {
        "title": "Tool-use evals on a real engine (SmolLM2-135M)",
        "note": "The eval suite (24 program-checked tasks) through the gateway's loop, without aids and with each "
        "aid alone; the full scorecard is in docs/local-models.md.",
        "rows": rows,
    }
