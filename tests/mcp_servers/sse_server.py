"""A small MCP server on the legacy HTTP+SSE transport (GET /sse + POST /messages/), for the SSE tests.

Run: `python -m tests.mcp_servers.sse_server --port N`; `GET /health` answers 200 once it listens.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import PlainTextResponse

server: MCPServer[Any] = MCPServer("legacy-sse")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def shout(text: str) -> str:
    """Return the text in capitals."""
    return text.upper()


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = server.sse_app(host="127.0.0.1")  # its DNS-rebinding guard allows 127.0.0.1 and localhost
    app.add_route("/health", health)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
