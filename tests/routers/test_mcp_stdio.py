"""The stdio front door (`python -m app.cli mcp`) fed raw lines: a line that is not JSON-RPC gets JSON-RPC's error
reply and the session goes on (issue 29, item 11)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import store_url
from tests.helpers import REPO
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.scenarios.conftest import SETTING_PREFIXES

pytestmark = pytest.mark.timeout(120)
ANSWER_WITHIN_S = 30.0  # a busy machine's bound on one reply (the process answers in milliseconds)


class Stdio:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def send(self, line: str | dict[str, Any]) -> None:
        assert self.process.stdin is not None
        text = line if isinstance(line, str) else json.dumps(line)
        self.process.stdin.write(text.encode() + b"\n")
        await self.process.stdin.drain()

    async def reply(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), ANSWER_WITHIN_S)
        assert line, "stdout closed: the session ended"
        answer: dict[str, Any] = json.loads(line)
        return answer


async def test_a_malformed_line_gets_a_json_rpc_error_and_the_session_goes_on(
    mock: MockLMStudio, tmp_path: Path
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    env = {**clean, "LMSTUDIO_BASE_URL": mock.base_url, "MCP_CONFIG": "", "BRIDGE_DATABASE_URL": store_url()}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "mcp",
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=(tmp_path / "stderr.log").open("wb"),
    )
    stdio = Stdio(process)
    try:
        await stdio.send("{this is not json")  # before the handshake
        assert await stdio.reply() == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32700, "message": "Parse error: the line is not JSON"},
        }
        await stdio.send("")  # a blank line is no message: no answer (the next reply is the handshake's)
        init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        await stdio.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init})
        assert (await stdio.reply())["id"] == 1
        await stdio.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        await stdio.send({"jsonrpc": "2.0", "id": "two", "mehtod": "tools/list"})  # JSON, not JSON-RPC
        invalid = await stdio.reply()
        assert (invalid["id"], invalid["error"]["code"]) == (None, -32600), invalid
        await stdio.send('{"jsonrpc": "2.0", "id": 3, "method": "tools/list"')  # cut short
        assert (await stdio.reply())["error"]["code"] == -32700
        await stdio.send({"jsonrpc": "2.0", "id": 4, "method": "tools/list"})
        listed = await stdio.reply()
        assert listed["id"] == 4 and "autonomous_with_mcp" in {t["name"] for t in listed["result"]["tools"]}
    finally:
        assert process.stdin is not None
        process.stdin.close()  # end of input: the stdio mode ends
        try:
            await asyncio.wait_for(process.wait(), ANSWER_WITHIN_S)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    stderr = (tmp_path / "stderr.log").read_text(errors="replace")
    assert "Traceback" not in stderr, stderr
    assert process.returncode == 0, stderr
