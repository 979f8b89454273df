"""Memory after start-up and one run (issue 35: <= 100 MB with the store on), and the floor under it: the
libraries the gateway has loaded by then, imported alone in a fresh interpreter."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import tempfile
from pathlib import Path

import httpx

from bench.common import Row, Server, gateway, mock_lmstudio, post_json, verdict, write_mcp_config
from tests.helpers import REPO, TIME_CALL, script

SERVER = "time"  # the real mcp-server-time: the run opens the first MCP session, and with it the SDK
TASK = "What time is it in UTC? Use the tool. " + script(calls=[[TIME_CALL]])
TARGET_MB = 100.0
SETTLE_S = 1.0  # after start-up and after the run: background start-up work and the writer's commit are done
OWN = ("app", "services", "routers")  # the gateway's own packages
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$", re.M)

# a fresh interpreter imports the modules named on stdin, one per line, and prints how many it could import
# and its RSS (VmRSS) in MB; a module that cannot be imported alone (a platform's, a `__main__`) is skipped
IMPORTER = """
import importlib, sys, warnings
warnings.simplefilter("ignore")
done = 0
for name in sys.stdin.read().split():
    try:
        importlib.import_module(name)
        done += 1
    except BaseException:
        pass
rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))
print(done, rss / 1024)
"""


async def run() -> dict[str, object]:
    async with contextlib.AsyncExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-memory-")))
        config = write_mcp_config(directory, [SERVER])
        mock = await stack.enter_async_context(mock_lmstudio())
        client = await stack.enter_async_context(httpx.AsyncClient(timeout=60.0))

        # the figures: a gateway as a user runs it (the store on: a SQLite file)
        plain = await stack.enter_async_context(gateway(mock.base_url, config, name="memory"))
        idle_mb, after_mb = await _idle_and_after_one_run(plain, client)
        await plain.stop()

        # the modules: the same gateway again, telling its imports (`python -X importtime`, on stderr)
        told = await stack.enter_async_context(
            gateway(mock.base_url, config, name="memory-imports", PYTHONPROFILEIMPORTTIME="1")
        )
        await asyncio.sleep(SETTLE_S)
        at_start = imported(told.log_tail(10**9))
        await _idle_and_after_one_run(told, client)
        after_run = imported(told.log_tail(10**9))

    libraries_start = [m for m in at_start if not _own(m)]
    libraries = [m for m in after_run if not _own(m)]
    own = [m for m in after_run if _own(m)]
    start_n, start_mb = await _import_alone(libraries_start)
    lib_n, lib_mb = await _import_alone(libraries)
    all_n, all_mb = await _import_alone(libraries + own)
    _, bare_mb = await _import_alone([])
    rows: list[Row] = [
        ("a bare interpreter (`python -c`, nothing imported)", f"{bare_mb:.1f} MB", "baseline"),
        ("gateway RSS, idle after start-up (store on)", f"{idle_mb:.1f} MB", "report"),
        (
            "gateway RSS after start-up and one run (store on)",
            f"{after_mb:.1f} MB ({verdict(after_mb <= TARGET_MB)})",
            f"<= {TARGET_MB:.0f} MB (issue 35)",
        ),
        (
            "the libraries loaded at start-up, imported alone in a fresh interpreter",
            f"{start_mb:.1f} MB ({start_n} of {len(libraries_start)} modules)",
            "report",
        ),
        (
            "the libraries loaded by the end of the first run, imported alone (the floor)",
            f"{lib_mb:.1f} MB ({lib_n} of {len(libraries)} modules; +{lib_mb - start_mb:.1f} MB imported by the run)",
            "report",
        ),
        (
            "those libraries and the gateway's own modules, imported alone",
            f"{all_mb:.1f} MB ({all_n - lib_n} gateway modules: +{all_mb - lib_mb:.1f} MB)",
            "report",
        ),
        (
            "what one run leaves beyond the imports (sessions, caches, the store's connections)",
            f"{after_mb - all_mb:+.1f} MB",
            "report",
        ),
        (
            f"{TARGET_MB:.0f} MB after a run, with these libraries",
            "reachable" if lib_mb < TARGET_MB else f"out of reach: the libraries alone take {lib_mb:.1f} MB",
            "report",
        ),
    ]
    return {
        "title": "Memory after start-up and one run",
        "note": (
            "VmRSS of `python -m app.cli serve` (the store on, a SQLite file; BRIDGE_LOG_LEVEL=WARNING) "
            f"{SETTLE_S:g} s after it answers `/healthz`, and {SETTLE_S:g} s after one `POST /v1/autonomous` "
            "whose `[[mock ...]]` script makes the mock LM Studio call the real mcp-server-time once (the first "
            "MCP session, and with it the MCP SDK, is opened by that run). **The floor**: a second gateway, "
            "started with PYTHONPROFILEIMPORTTIME=1, tells every module it imports; the modules outside the "
            "gateway's own packages (`app`, `services`, `routers`) that it has loaded after start-up, and after "
            "the same one run, are then imported by a fresh interpreter of the same venv, which reports its "
            "VmRSS. The modules it cannot import are optional ones whose import failed in the gateway too "
            "(`-X importtime` names every attempt). Imports only: no object of the gateway is made, so this is a "
            "floor under any gateway built on these libraries. The venv is the dev one (`make install`): httpx "
            "imports its CLI's rich and pygments when they are installed (the dev extra brings them)."
        ),
        "rows": rows,
    }


def _own(module: str) -> bool:
    return module.split(".", 1)[0] in OWN


def imported(log: str) -> list[str]:
    """The modules named by the `-X importtime` lines of a log, in order, each once."""
    return list(dict.fromkeys(IMPORT_LINE.findall(log)))


async def _idle_and_after_one_run(server: Server, client: httpx.AsyncClient) -> tuple[float, float]:
    await asyncio.sleep(SETTLE_S)
    idle = server.rss_mb()
    answer = await post_json(client, server.url("/v1/autonomous"), {"task": TASK, "mcp_servers": [SERVER]})()
    if answer.get("status") != "completed" or len(answer.get("steps") or []) != 1:
        raise RuntimeError(f"the run did not complete with one tool call: {answer!r}")
    await asyncio.sleep(SETTLE_S)
    return idle, server.rss_mb()


async def _import_alone(modules: list[str]) -> tuple[int, float]:
    """(modules imported, VmRSS in MB) of a fresh interpreter that imported `modules`."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        IMPORTER,
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate("\n".join(modules).encode())
    if process.returncode != 0:
        raise RuntimeError(f"the importer failed (exit {process.returncode})")
    done, rss = out.split()
    return int(done), float(rss)
