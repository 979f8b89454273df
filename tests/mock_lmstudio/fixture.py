"""Start the mock LM Studio as a real subprocess and drive its control API from tests.

mock = await start_mock("--api", "v0")      # or: async with mock_lmstudio() as mock: ...
await mock.faults({"kind": "status", "status": 503})
...
await mock.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import httpx

from tests.processes import log_file, terminate

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MockLMStudio:
    """A running mock LM Studio subprocess."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, log: IO[bytes]) -> None:
        self.process = process
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log.name
        self._log = log
        self.client = httpx.AsyncClient(base_url=self.base_url, timeout=10)

    async def faults(self, *faults: dict[str, Any]) -> None:
        """Queue faults (FIFO) for the next requests."""
        (await self.client.post("/_mock/faults", json={"faults": list(faults)})).raise_for_status()

    async def clear_faults(self) -> None:
        (await self.client.delete("/_mock/faults")).raise_for_status()

    async def requests(self) -> list[dict[str, Any]]:
        """The request log since the last reset (control calls excluded)."""
        response = await self.client.get("/_mock/requests")
        response.raise_for_status()
        return list(response.json()["requests"])

    async def reset(self) -> None:
        """Clear faults and the request log; restore the model list and states."""
        (await self.client.post("/_mock/reset")).raise_for_status()

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return Path(self.log_path).read_text(errors="replace")[-chars:]
        return ""

    async def stop(self) -> None:
        """Terminate the process (kill after 5 s) and wait for it."""
        await self.client.aclose()
        await terminate(self.process)
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                break
            with contextlib.suppress(httpx.TransportError):
                if (await self.client.get("/_mock/health", timeout=1)).status_code == 200:
                    return
            await asyncio.sleep(0.05)
        tail = self.log_tail()
        await self.stop()
        raise RuntimeError(
            f"mock LM Studio on port {self.port} not ready (exit code {self.process.returncode}); log:\n{tail}"
        )


async def start_mock(*args: str) -> MockLMStudio:
    """Start ``python -m tests.mock_lmstudio --port P *args`` and wait until it answers."""
    port = free_port()
    log = log_file("mock-lmstudio-")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.mock_lmstudio",
        "--port",
        str(port),
        *args,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    mock = MockLMStudio(process, port, log)
    await mock._wait_ready()
    return mock


@contextlib.asynccontextmanager
async def mock_lmstudio(*args: str) -> AsyncIterator[MockLMStudio]:
    """``async with mock_lmstudio("--api", "v0") as mock:`` — started, then stopped on exit."""
    mock = await start_mock(*args)
    try:
        yield mock
    finally:
        await mock.stop()
