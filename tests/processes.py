"""Helpers for the real processes the tests, benchmarks and demo start (mock LM Studio, gateway, floor)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import IO, Any

import httpx
import uvicorn

from tests.helpers import REPO, eventually

STOP_TIMEOUT_S = 5.0
START_TIMEOUT_S = 60.0

Process = asyncio.subprocess.Process | subprocess.Popen[bytes]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_file(prefix: str) -> IO[bytes]:
    """A temp file for a child process's output; it outlives this call (the caller closes and deletes it)."""
    return tempfile.NamedTemporaryFile(prefix=prefix, suffix=".log", delete=False)


def log_tail(path: str, chars: int = 3000) -> str:
    """The end of a child process's log ("" when it cannot be read)."""
    with contextlib.suppress(OSError):
        return Path(path).read_text(errors="replace")[-chars:]
    return ""


async def spawn_python(
    module: str, *args: str, log: IO[bytes], env: Mapping[str, str] | None = None, cwd: Path | str = REPO
) -> asyncio.subprocess.Process:
    """``python -m <module> <args>`` with stdout and stderr in `log`, unbuffered; `env` replaces this
    process's environment when given. Without BRIDGE_DATABASE_URL a gateway gets a run store of its own
    next to its log, never `./data/` of the repository."""
    env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    env.setdefault("BRIDGE_DATABASE_URL", f"sqlite+aiosqlite:///{log.name}.runs.db")
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )


def exit_code(process: Process) -> int | None:
    """The exit code, or None while it runs."""
    return process.poll() if isinstance(process, subprocess.Popen) else process.returncode


async def wait_healthy(
    url: str, process: Process, within_s: float = START_TIMEOUT_S, log_tail: Callable[[], str] | None = None
) -> None:
    """Poll GET `url` until it answers 200; RuntimeError (with `log_tail()`) when `process` exits first or
    `within_s` passes."""

    async with httpx.AsyncClient(timeout=1) as client:

        async def healthy() -> bool:
            if exit_code(process) is not None:
                raise RuntimeError(f"exited with code {exit_code(process)} before {url} answered")
            with contextlib.suppress(httpx.TransportError):
                return (await client.get(url)).status_code == 200
            return False

        try:
            await eventually(healthy, within_s, f"{url} answering 200")
        except (AssertionError, RuntimeError) as exc:
            tail = log_tail() if log_tail else ""
            raise RuntimeError(f"{exc}; log:\n{tail}" if tail else str(exc)) from None


async def terminate(process: asyncio.subprocess.Process, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; waits for it either way."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


@contextlib.asynccontextmanager
async def serve_in_loop(
    app: Any, what: str = "uvicorn", within_s: float = START_TIMEOUT_S, port: int | None = None
) -> AsyncIterator[str]:
    """An ASGI app under uvicorn on `port` (default: a free one) of 127.0.0.1, in this event loop; yields its base
    URL and stops it on exit."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.ensure_future(server.serve())

    def started() -> bool:
        if task.done():
            task.result()
            raise RuntimeError(f"{what} stopped before it started")
        return bool(server.started)

    await eventually(started, within_s, f"{what} started")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
