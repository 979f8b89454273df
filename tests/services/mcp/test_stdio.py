"""The stdio transport without the SDK's pipe tasks (services/mcp/stdio.py): the SDK's session over it, the
lines it reads, a broken stdin, and the server stopped on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import mcp_types as mtypes
import psutil
import pytest
from mcp import ClientSession, MCPError, StdioServerParameters
from mcp.shared.message import SessionMessage

from services.mcp.stdio import PipeReadStream, PipeWriteStream, stdio_pipes
from tests.helpers import REPO

FAULT = StdioServerParameters(command=sys.executable, args=["-m", "tests.mcp_servers.fault_server"], cwd=str(REPO))


@contextlib.asynccontextmanager
async def fault_session() -> AsyncIterator[ClientSession]:
    async with stdio_pipes(FAULT, sys.stderr) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def text_of(result: mtypes.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, mtypes.TextContent))


async def test_the_sdk_session_lists_and_calls_tools_over_the_pipes_concurrent_calls_each_get_their_answer() -> None:
    async with fault_session() as session:
        names = {tool.name for tool in (await session.list_tools()).tools}
        assert {"echo", "add", "huge"} <= names
        results = await asyncio.gather(*(session.call_tool("add", {"a": i, "b": 1000}) for i in range(20)))
        assert [text_of(r) for r in results] == [str(i + 1000) for i in range(20)]


async def test_an_answer_of_a_million_characters_arrives_whole_across_many_reads() -> None:
    async with fault_session() as session:
        result = await session.call_tool("huge", {"chars": 1_000_000})
        assert text_of(result) == "x" * 1_000_000
        assert text_of(await session.call_tool("echo", {"text": "after"})) == "after"


async def test_a_server_that_dies_in_a_call_ends_the_call_with_connection_closed_not_a_hang() -> None:
    async with fault_session() as session:
        with anyio.fail_after(30), pytest.raises(MCPError) as caught:
            await session.call_tool("crash", {})
        assert caught.value.error.code == mtypes.CONNECTION_CLOSED


async def test_leaving_stops_the_server_process() -> None:
    async with fault_session() as session:
        pid = int(text_of(await session.call_tool("pid", {})))
        assert psutil.pid_exists(pid)
    assert not psutil.pid_exists(pid)  # the shutdown waited for its exit, and it was reaped


class Chunks:
    """A stdout that hands out the given chunks, then ends."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    async def receive(self) -> bytes:
        if not self.chunks:
            raise anyio.EndOfStream
        return self.chunks.pop(0)


async def test_the_read_stream_yields_one_message_or_error_per_line_however_the_lines_are_cut() -> None:
    ping = b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}'
    stream = PipeReadStream(Chunks(ping[:10], ping[10:] + b"\nnot json\n\xff\xfe\n", ping + b"\r\n", b"cut off"))
    items = [item async for item in stream]  # ends at EOF; the unfinished last line is dropped, as the SDK does
    assert len(items) == 4
    first, bad_json, bad_text, last = items
    assert isinstance(first, SessionMessage) and isinstance(last, SessionMessage)
    assert isinstance(first.message, mtypes.JSONRPCRequest) and first.message.method == "ping"
    assert isinstance(bad_json, ValueError) and isinstance(bad_text, UnicodeDecodeError)


class FailingStdout:
    async def receive(self) -> bytes:
        raise ConnectionResetError


async def test_a_pipe_that_fails_is_the_end_of_the_stream() -> None:
    with pytest.raises(anyio.EndOfStream):
        await PipeReadStream(FailingStdout()).receive()


async def test_a_closed_read_stream_receives_nothing_more() -> None:
    stream = PipeReadStream(Chunks(b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}\n'))
    await stream.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        await stream.receive()


class BrokenStdin:
    def __init__(self) -> None:
        self.sends = 0

    async def send(self, data: bytes) -> None:
        self.sends += 1
        raise anyio.BrokenResourceError


class Stdout:
    def __init__(self) -> None:
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


async def test_a_write_the_server_cannot_take_closes_its_stdout_for_the_reader_and_later_writes_are_dropped() -> None:
    stdin, stdout = BrokenStdin(), Stdout()
    stream = PipeWriteStream(stdin, stdout)
    message: Any = SessionMessage(mtypes.JSONRPCRequest(jsonrpc="2.0", id=1, method="ping"))
    await stream.send(message)  # no error here: the session learns it from the read side, as with the SDK's task
    assert stdout.closed
    await stream.send(message)
    assert stdin.sends == 1
