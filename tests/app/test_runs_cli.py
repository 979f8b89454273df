"""`lmstudio-bridge runs` as a real process against a running gateway: list, show, follow (read live through a
pty, and resumed after the connection is cut), approve and deny; the key from BRIDGE_API_KEY."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.runs_view import Style, fold
from tests.conftest import CLIENT_TIMEOUT_S, make_settings, served
from tests.helpers import REPO, TIME_CALL, call, eventually, script
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.processes import free_port, terminate

pytestmark = pytest.mark.timeout(120)
KEY = "runs-cli-test-key"
CONVERT = call(
    "time__convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}
)  # needs a person's approval here
ANSI = "\x1b["


@pytest.fixture(scope="module")
async def gateway(mock_server: MockLMStudio, mcp_json: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        lmstudio_base_url=mock_server.base_url,
        mcp_config=str(mcp_json),
        approval_tools=["time__convert_time"],
        api_keys=KEY,
    )
    async with served(settings, timeout=CLIENT_TIMEOUT_S, headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "BRIDGE_URL")}
    return {**env, "PYTHONPATH": str(REPO), "BRIDGE_API_KEY": KEY, **extra}


async def cli(*args: str, **env: str) -> tuple[int, str, str]:
    """`python -m app.cli runs <args>` (stdout a pipe: no colour): exit status, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "runs",
        *args,
        cwd=REPO,
        env=cli_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def start_run(gateway: httpx.AsyncClient, *calls: dict[str, Any], servers: tuple[str, ...] = ("time",)) -> str:
    task = "Do it " + script(calls=[list(calls)])
    response = await gateway.post("/v1/runs", json={"task": task, "mcp_servers": list(servers)})
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])


async def status_of(gateway: httpx.AsyncClient, run_id: str, *wanted: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        record = (await gateway.get(f"/v1/runs/{run_id}")).json()
        return record if record["status"] in wanted else None

    return dict(await eventually(reached, 30, f"run {run_id} {wanted}"))


@dataclass
class Terminal:
    """A process whose stdout and stderr are a pty (a terminal, as a person runs it); `text` is what it showed."""

    process: asyncio.subprocess.Process
    master: int
    chunks: list[bytes] = field(default_factory=list)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def read(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(self.master, 65536):
                self.chunks.append(chunk)

    async def shows(self, text: str, within_s: float = 30) -> None:
        def seen() -> bool:
            self.read()
            return text in self.text

        try:
            await eventually(seen, within_s, f"{text!r} on the terminal")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the terminal shows:\n{self.text}") from None


@contextlib.asynccontextmanager
async def terminal(*args: str) -> AsyncIterator[Terminal]:
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "runs", *args, cwd=REPO, env=cli_env(), stdout=slave, stderr=slave
    )
    os.close(slave)
    term = Terminal(process, master)
    try:
        yield term
    finally:
        await terminate(process)
        term.read()
        os.close(master)


class CuttableProxy:
    """A TCP proxy to the gateway whose open connections the test can cut (a dropped network)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    async def __aenter__(self) -> CuttableProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        self.server.close()
        await self.server.wait_closed()

    def cut(self) -> None:
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def gateway_url(gateway: httpx.AsyncClient) -> str:
    return str(gateway.base_url).rstrip("/")


async def test_list_and_show(gateway: httpx.AsyncClient) -> None:
    done = await start_run(gateway, TIME_CALL)
    await status_of(gateway, done, "completed")
    url = gateway_url(gateway)

    code, out, err = await cli("--url", url)
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["RUN", "STATUS", "MODEL", "SERVERS"] and ANSI not in out
    row = next(r for r in rows if r.startswith(done))
    assert row.split()[1:4] == ["completed", "qwen/qwen3-4b", "time"] and "Do it" in row

    code, out, _ = await cli("--url", url, "--status", "completed", "--server", "time", "--limit", "1", "--json")
    page = json.loads(out)
    assert code == 0 and [r["run_id"] for r in page["data"]] == [done]

    code, out, err = await cli("show", done, "--url", url)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{done}  completed" and "  servers  time" in lines
    assert lines[lines.index("round 1") + 1] == '  -> time__get_current_time {"timezone": "UTC"}'
    assert lines[lines.index("round 1") + 2].startswith("     <- ok ") and "[call_0_0]" in out
    assert lines[lines.index("round 1") + 3] == "        {"  # the tool's output (JSON on several lines), folded
    assert lines[lines.index("round 1") + 7].startswith("        ... (") and "--full shows all" in out
    assert lines[lines.index("output") + 1].startswith("  Based on the tools: ")

    code, out, _ = await cli("show", done, "--url", url, "--json")
    assert code == 0 and json.loads(out)["steps"][0]["tool"] == "get_current_time"


async def test_follow_live_on_a_terminal_then_approve(gateway: httpx.AsyncClient) -> None:
    run_id = await start_run(gateway, CONVERT)
    url = gateway_url(gateway)
    async with terminal("follow", run_id, "--url", url) as term:
        await term.shows("approval needed: time__convert_time")
        await term.shows(f"lmstudio-bridge runs approve {run_id} call_0_0")
        assert term.process.returncode is None, "follow waits with the run"
        assert ANSI in term.text, "colour on a terminal"
        code, out, err = await cli("approve", run_id, "call_0_0", "--url", url)
        assert (code, out.strip()) == (0, f"approved call_0_0 of {run_id}"), err
        await term.shows("approval approved for time__convert_time")
        await term.shows("<- time__convert_time")
        await term.shows("after 1 round(s)")
        assert await asyncio.wait_for(term.process.wait(), 30) == 0
    plain = term.text.replace("\r\n", "\n")
    assert plain.count("approval needed") == 1 and f"run {run_id}" in plain and "round 1" in plain


async def test_follow_resumes_after_the_connection_drops(gateway: httpx.AsyncClient) -> None:
    run_id = await start_run(gateway, CONVERT)
    port = int(gateway_url(gateway).rsplit(":", 1)[1])
    async with CuttableProxy(port) as proxy:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "app.cli", "runs", "follow", run_id, "--url", f"http://127.0.0.1:{proxy.port}", "--json"),
            cwd=REPO,
            env=cli_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None and process.stderr is not None
        seen: list[dict[str, Any]] = []
        try:
            while not any(e["event"] == "approval.requested" for e in seen):
                seen.append(json.loads(await asyncio.wait_for(process.stdout.readline(), 30)))
            proxy.cut()
            notice = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
            assert notice.startswith("(connection lost") and f"resuming after event {seen[-1]['id']})" in notice
            await eventually(lambda: proxy.connections >= 2, 30, "follow reconnecting")
            decided = await gateway.post(f"/v1/runs/{run_id}/approvals/call_0_0", json={"decision": "deny"})
            assert decided.status_code == 200, decided.text
            rest, _ = await asyncio.wait_for(process.communicate(), 30)
        finally:
            await terminate(process)
    seen += [json.loads(line) for line in rest.decode().splitlines()]
    ids = [e["id"] for e in seen]
    assert ids == list(range(1, len(ids) + 1)), "every event once, in order, across the drop"
    assert [e["event"] for e in seen][-1] == "run.completed"
    assert any(e["event"] == "approval.decided" and e["data"]["decision"] == "denied" for e in seen)
    assert process.returncode == 0


async def test_deny_and_errors(gateway: httpx.AsyncClient) -> None:
    url = gateway_url(gateway)
    run_id = await start_run(gateway, CONVERT)
    await status_of(gateway, run_id, "awaiting_approval")
    code, out, _ = await cli("deny", run_id, "call_0_0", "--reason", "not now", "--url", url, "--json")
    assert code == 0 and json.loads(out) == {"run_id": run_id, "tool_call_id": "call_0_0", "decision": "deny"}
    record = await status_of(gateway, run_id, "completed")
    assert record["steps"][0]["approval"] == "denied"

    code, _, err = await cli("show", "run_nope", "--url", url)
    assert code == 1 and err.startswith("error: ") and err.rstrip().endswith("(run_not_found)")
    code, _, err = await cli("--url", url, BRIDGE_API_KEY="wrong")
    assert code == 1 and "(unauthorized)" in err
    code, _, err = await cli("--url", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and err.startswith("error: cannot reach the gateway at http://127.0.0.1:")


def test_outputs_are_folded() -> None:
    text = "\n".join(f"line {i}" for i in range(10))
    folded = fold(text, "  ")
    assert folded[:4] == ["  line 0", "  line 1", "  line 2", "  line 3"]
    assert folded[4] == "  ... (10 lines, 69 characters; --full shows all)" and len(folded) == 5
    assert fold(text, "  ", full=True) == [f"  line {i}" for i in range(10)]
    assert fold("short", "") == ["short"]


def test_no_colour_when_not_a_terminal_or_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    read, write = os.pipe()
    with os.fdopen(write, "w") as pipe:
        assert Style(pipe)("x", "31") == "x"
    os.close(read)
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        assert Style(tty)("x", "31") == "\x1b[31mx\x1b[0m"
        monkeypatch.setenv("NO_COLOR", "1")
        assert Style(tty)("x", "31") == "x"
    os.close(master)
