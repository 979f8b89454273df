"""Start the mock LM Studio as a real subprocess and drive its control API from tests.

mock = await start_mock("--api", "v0")      # or: async with mock_lmstudio() as mock: ...
await mock.faults({"kind": "status", "status": 503})
await mock.configure(lmstudio="0.3", jit=False)   # until the next reset
...
await mock.stop()

`start_mock(lmstudio="0.3")` starts one that answers in an older version's shapes (``--lmstudio 0.3``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import IO, Any

import httpx

from tests.helpers import eventually
from tests.processes import free_port, log_file, log_tail, spawn_python, terminate, wait_healthy

START_TIMEOUT_S = 20.0


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

    async def configure(self, **options: Any) -> dict[str, Any]:
        """Change how the mock behaves until the next reset: `lmstudio` ("current" | "0.3"), `jit`, `jit_load_ms`,
        `auto_evict`, `separate_reasoning`, `pin_loaded_model`, and `models` (the ``--models`` file format, with a
        model's `context_length`, `listed_context` and `overflow`)."""
        response = await self.client.post("/_mock/config", json=options)
        response.raise_for_status()
        return dict(response.json())

    async def requests(self) -> list[dict[str, Any]]:
        """The request log since the last reset (control calls excluded)."""
        response = await self.client.get("/_mock/requests")
        response.raise_for_status()
        return list(response.json()["requests"])

    async def held(self, gate: str) -> int:
        """How many requests wait at `gate` now (script ``"hold": gate``)."""
        response = await self.client.get("/_mock/held")
        response.raise_for_status()
        return int(response.json()["held"].get(gate, 0))

    async def until_held(self, gate: str, count: int = 1, within_s: float = 20.0) -> None:
        """Wait until `count` requests wait at `gate`: they have reached LM Studio and get no answer yet."""

        async def reached() -> bool:
            return await self.held(gate) >= count

        await eventually(reached, within_s, f"{count} request(s) held at the mock's gate {gate!r}")

    async def release(self, gate: str) -> None:
        """Let the requests held at `gate` (and every later one) be answered."""
        (await self.client.post("/_mock/release", json={"gate": gate})).raise_for_status()

    async def chat_requests(self) -> list[dict[str, Any]]:
        """The logged requests to ``/v1/chat/completions``."""
        return [r for r in await self.requests() if r["path"] == "/v1/chat/completions"]

    async def reset(self) -> None:
        """Clear faults and the request log; restore the model list and states and the options."""
        (await self.client.post("/_mock/reset")).raise_for_status()

    def log_tail(self, chars: int = 2000) -> str:
        return log_tail(self.log_path, chars)

    async def stop(self) -> None:
        """Terminate the process (kill after 5 s) and wait for it."""
        await self.client.aclose()
        await terminate(self.process)
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)

    async def _wait_ready(self) -> None:
        try:
            await wait_healthy(f"{self.base_url}/_mock/health", self.process, START_TIMEOUT_S, self.log_tail)
        except RuntimeError as exc:
            await self.stop()
            raise RuntimeError(f"mock LM Studio on port {self.port} not ready: {exc}") from None


async def start_mock(*args: str, port: int | None = None, lmstudio: str | None = None) -> MockLMStudio:
    """Start ``python -m tests.mock_lmstudio --port P *args`` (P: `port` or a free one); wait until it answers.

    `lmstudio`: the version whose answer shapes it takes (``--lmstudio``; default: current LM Studio)."""
    port = port or free_port()
    if lmstudio is not None:
        args = (*args, "--lmstudio", lmstudio)
    log = log_file("mock-lmstudio-")
    process = await spawn_python("tests.mock_lmstudio", "--port", str(port), *args, log=log)
    mock = MockLMStudio(process, port, log)
    await mock._wait_ready()
    return mock


@contextlib.asynccontextmanager
async def mock_lmstudio(
    *args: str, port: int | None = None, lmstudio: str | None = None
) -> AsyncIterator[MockLMStudio]:
    """``async with mock_lmstudio("--api", "v0") as mock:`` — started, then stopped on exit."""
    mock = await start_mock(*args, port=port, lmstudio=lmstudio)
    try:
        yield mock
    finally:
        await mock.stop()
