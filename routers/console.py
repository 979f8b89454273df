"""The run console at `/ui`: a static page shipped inside the package (routers/ui/), served with a strict
Content-Security-Policy. The page talks to the public API only (`/v1/runs`, `/v1/models`, ...) with the key the
person gives it; nothing secret is written into it, so `/ui` itself needs no key (docs/console.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response

from routers.route import Route

router = APIRouter(prefix="/ui", include_in_schema=False, route_class=Route)

UI_DIR = Path(__file__).with_name("ui")
# every file the console has, and its type: nothing else under /ui is served (no directory walk)
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "timeline.js": "text/javascript; charset=utf-8",
    "views.js": "text/javascript; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# scripts and styles from the gateway only (no inline script or style, nothing from elsewhere), requests to
# the gateway only, no frames, no forms posted anywhere, no <base> to re-point relative URLs
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # revalidated each time: an upgraded gateway serves its own console at once
}
_cache: dict[str, bytes] = {}

AssetName = Annotated[str, PathParam(description="A file of the console")]


@router.get("", response_class=RedirectResponse)
async def console_root() -> Response:
    """The console's page lives at `/ui/` (relative asset URLs resolve under it)."""
    return RedirectResponse("/ui/", status_code=308, headers=SECURITY_HEADERS)


@router.get("/", response_class=Response)
async def console_page() -> Response:
    """The console's page."""
    return await _asset("index.html")


@router.get("/{name}", response_class=Response)
async def console_asset(name: AssetName) -> Response:
    """One of the console's scripts, styles or images."""
    return await _asset(name)


async def _asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, f"The console has no file {name!r}")  # a not_found problem document
    body = _cache.get(name)
    if body is None:  # read once (the files ship with the package and do not change under a running gateway)
        body = _cache[name] = await anyio.Path(UI_DIR / name).read_bytes()
    return Response(body, media_type=media_type, headers=SECURITY_HEADERS)
