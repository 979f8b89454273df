"""The MCP front door over stdio (`lmstudio-bridge mcp`): the SDK's stdio transport, except that a line that is
not a JSON-RPC message gets JSON-RPC's error (-32700 parse error when it is not JSON, -32600 invalid request when
it is JSON of another shape; `id: null`) and the session goes on. (The SDK drops
such a line without a word, so a client that sent a broken request waits for an answer forever.)

This module imports the MCP SDK: only the stdio mode imports it."""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError
from pydantic import ValidationError

from services.mcp.transport import ReadStreamWrapper

log = logging.getLogger("lmstudio_bridge.mcp")

PARSE_ERROR_MESSAGE = "Parse error: the line is not JSON"
INVALID_REQUEST_MESSAGE = "Invalid Request: the line is JSON but not a JSON-RPC message"


class ParseErrorsAnswered(ReadStreamWrapper):
    """The transport's read stream with each line it could not parse answered on the write stream (a parse error)
    instead of passed on."""

    def __init__(self, inner: Any, write: Any) -> None:
        super().__init__(inner)
        self._write = write

    async def receive(self) -> SessionMessage | Exception:
        while True:
            item = await super().receive()
            if not isinstance(item, Exception):
                return item
            if blank(item):  # not a message at all: ignored, as the SDK does
                continue
            await self._write.send(SessionMessage(JSONRPCError(jsonrpc="2.0", id=None, error=error_for(item))))


def blank(exc: Exception) -> bool:
    """The line the transport could not read was empty or only white space."""
    errors = exc.errors() if isinstance(exc, ValidationError) else []
    return bool(errors) and all(isinstance(e.get("input"), str) and not e["input"].strip() for e in errors)


def error_for(exc: Exception) -> ErrorData:
    """JSON-RPC's answer to a line the transport could not read: -32700 when it is not JSON, -32600 when it is
    JSON but not a JSON-RPC message. Only the kind of failure is said (the line may hold anything)."""
    errors = exc.errors() if isinstance(exc, ValidationError) else []
    if errors and all(e["type"] != "json_invalid" for e in errors):
        log.warning("a stdin line is JSON but not a JSON-RPC message: answered with an invalid-request error")
        return ErrorData(code=INVALID_REQUEST, message=INVALID_REQUEST_MESSAGE)
    log.warning("a stdin line is not JSON: answered with a parse error")
    return ErrorData(code=PARSE_ERROR, message=PARSE_ERROR_MESSAGE)


async def run_stdio(server: MCPServer[Any]) -> None:
    """`server.run_stdio_async()` with broken lines answered (the SDK's own method, with the read side wrapped)."""
    lowlevel = server._lowlevel_server  # what MCPServer.run_stdio_async runs (the SDK has no public accessor)
    async with stdio_server() as (read_stream, write_stream):
        answered = ParseErrorsAnswered(read_stream, write_stream)
        await lowlevel.run(answered, write_stream, lowlevel.create_initialization_options())
