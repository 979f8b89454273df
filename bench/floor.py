"""The floor baseline: a minimal Starlette app answering every request with a fixed JSON.

Served by uvicorn exactly the way `python -m app.cli serve` serves the gateway (same `uvicorn.run`
arguments, import string, default loop and HTTP implementation), so its latency and CPU time are the
cost of any Python HTTP hop on this machine. Run: ``python -m bench.floor --port N``.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

BODY = {"ok": True, "content": [{"type": "text", "text": "hi"}], "is_error": False}


async def fixed(request: Request) -> JSONResponse:
    return JSONResponse(BODY)


app = Starlette(routes=[Route("/{path:path}", fixed, methods=["GET", "POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run("bench.floor:app", host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
