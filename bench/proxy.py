"""A bare pass-through proxy: the floor (bench/floor.py) plus one aiohttp request to an upstream per request.

The least any Python HTTP gateway does on a pass-through: read the body, send it upstream on a kept
connection (aiohttp, the gateway's own transport), relay the answer. No checks, routing, telemetry or
records; served by uvicorn exactly like the floor and the gateway. Against a real engine, the gateway's
overhead over this proxy is the gateway's own share; the proxy's over a direct call is the hop's
(bench/real_engine.py). Run: ``python -m bench.proxy --port N --upstream http://127.0.0.1:M``.
"""

from __future__ import annotations

import argparse
import os

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

UPSTREAM_VARIABLE = "BENCH_PROXY_UPSTREAM"
_session: aiohttp.ClientSession | None = None


async def forward(request: Request) -> Response:
    global _session
    if _session is None:  # created in the serving loop, kept for every request
        _session = aiohttp.ClientSession(os.environ[UPSTREAM_VARIABLE])
    body = await request.body()
    headers = {"content-type": request.headers.get("content-type", "application/json")}
    async with _session.post(request.url.path, data=body, headers=headers) as answer:
        content = await answer.read()
        return Response(content, answer.status, media_type=answer.headers.get("content-type"))


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/healthz", healthz), Route("/{path:path}", forward, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's base URL")
    args = parser.parse_args()
    os.environ[UPSTREAM_VARIABLE] = args.upstream
    uvicorn.run("bench.proxy:app", host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
