"""The MCP SDK's stream protocols (`ReadStream`, `WriteStream`, mcp.shared._stream_protocols) for the gateway's
own streams: `async with` around `aclose`, and a read stream's iteration around `receive` (ending at EOF, as
the SDK's memory streams do)."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Self

import anyio

if TYPE_CHECKING:  # the SDK is imported with the first connection, not at start-up
    from mcp.shared.message import SessionMessage


class Stream:
    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class ReadStream(Stream):
    async def receive(self) -> SessionMessage | Exception:
        raise NotImplementedError

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
