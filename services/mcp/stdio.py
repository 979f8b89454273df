"""The stdio transport to an MCP server process: the MCP SDK's process handling (spawn, environment, the
shutdown sequence), without the two pipe tasks of its `stdio_client`.

The SDK bridges the server's pipes to the session through two tasks and two in-memory streams: each request
wakes a writer task, each answer a reader task before the session's own reader. Here the session's
dispatcher reads the server's stdout itself (`PipeReadStream`) and a request is written to stdin by the
task that sends it (`PipeWriteStream`): two task switches and two stream hand-overs less per call
(docs/performance.md, "Issue 35, sixth session"). Both satisfy the SDK's `ReadStream` / `WriteStream`
protocols; what the session sees is the same: one message (or parse error) per line, EOF when the
server's stdout ends, the connection closed when its stdin breaks.

The process is spawned and stopped by the SDK's own helpers (`mcp.client.stdio`, pinned in the lock): a new
process group, stdin closed first, then the whole tree killed after the SDK's grace periods.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from services.mcp.streams import ReadStream, Stream

if TYPE_CHECKING:  # the SDK is imported with the first connection, not at start-up
    from mcp import StdioServerParameters
    from mcp.shared.message import SessionMessage


class PipeReadStream(ReadStream):
    """The server's stdout as a stream of messages, read by whoever receives (the session's dispatcher)."""

    def __init__(self, stdout: Any) -> None:
        from mcp.client.stdio import _parse_line  # the SDK's line parser: its messages and its parse-error log

        self._stdout = stdout
        self._parse = _parse_line
        self._partial = b""
        self._ready: deque[SessionMessage | Exception] = deque()
        self._closed = False
        self.reading = False  # a receive waits on the pipe

    async def receive(self) -> SessionMessage | Exception:
        while not self._ready:
            if self._closed:
                raise anyio.ClosedResourceError
            self.reading = True
            try:
                chunk = await self._stdout.receive()  # EndOfStream when the server's stdout ends
            except (OSError, anyio.BrokenResourceError) as exc:  # a pipe that fails has ended too
                raise anyio.EndOfStream from exc
            finally:
                self.reading = False
            *lines, self._partial = (self._partial + chunk).split(b"\n")
            self._ready.extend(self._message(line) for line in lines)
        return self._ready.popleft()

    def _message(self, line: bytes) -> SessionMessage | Exception:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:  # the SDK's strict decoding would end the transport: one bad line
            return exc
        return self._parse(text)

    def close(self) -> None:
        """Receive nothing more (a receive that waits on the pipe ends when the pipe does)."""
        self._closed = True

    async def aclose(self) -> None:
        self.close()


class PipeWriteStream(Stream):
    """The server's stdin: a message is serialised and written by the task that sends it. A write that fails
    (the server closed its stdin or died) closes the server's stdout for the reader, so that the session sees
    the connection end, as with the SDK's writer task, instead of waiting for an answer that cannot come."""

    def __init__(self, stdin: Any, stdout: Any) -> None:
        self._stdin = stdin
        self._stdout = stdout
        self._broken = False

    async def send(self, item: SessionMessage) -> None:
        if self._broken:
            return
        data = item.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
        try:
            await self._stdin.send(data)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            self._broken = True
            with contextlib.suppress(Exception):
                await self._stdout.aclose()  # the pending read ends: the dispatcher fans CONNECTION_CLOSED out

    # `aclose`: nothing; stdin is closed by the shutdown sequence, after the session


@contextlib.asynccontextmanager
async def stdio_pipes(
    params: StdioServerParameters, errlog: TextIO
) -> AsyncIterator[tuple[PipeReadStream, PipeWriteStream]]:
    """Spawn the server (as the SDK's `stdio_client` does) and yield its (read, write) streams; on exit, the
    SDK's shutdown sequence, shielded and bounded, with the server's stdout drained while it runs."""
    from mcp.client import stdio as sdk

    command = await sdk._get_executable_command(params.command)
    process = await sdk._create_platform_compatible_process(
        command=command,
        args=params.args,
        env=sdk.get_default_environment() | (params.env or {}),
        errlog=errlog,
        cwd=params.cwd,
    )
    assert process.stdin is not None and process.stdout is not None  # spawned with pipes
    read = PipeReadStream(process.stdout)
    try:
        yield read, PipeWriteStream(process.stdin, process.stdout)
    finally:
        with anyio.CancelScope(shield=True):
            read.close()
            async with anyio.create_task_group() as tg:
                if not read.reading:  # else that read drains it: a server stuck writing stdout can still exit
                    tg.start_soon(sdk._drain_stdout, process)
                await sdk._stop_server_process(process)  # ends the drain: it closes stdout last
