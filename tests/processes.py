"""Helpers for the real processes the tests and benchmarks start (mock LM Studio, gateway, floor)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from typing import IO

STOP_TIMEOUT_S = 5.0


def log_file(prefix: str) -> IO[bytes]:
    """A temp file for a child process's output; it outlives this call (the caller closes and deletes it)."""
    return tempfile.NamedTemporaryFile(prefix=prefix, suffix=".log", delete=False)


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
