"""routers/route.py: every API route rules itself out by its path's fixed beginning, and matches exactly as
FastAPI's own APIRoute would (the same Match and child scope) for every route and request."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute

from app.gateway import MCPSetup
from app.main import create_app
from routers.route import Route
from tests.conftest import make_settings

REQUESTS = [
    ("POST", "/v1/autonomous"),
    ("POST", "/v1/autonomous/with-mcp"),
    ("GET", "/v1/autonomous"),  # a path that exists, another method: PARTIAL (405)
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/mcp/servers/everything/tools/echo"),
    ("GET", "/v1/mcp/servers/everything/tools"),
    ("GET", "/v1/mcp/servers"),
    ("GET", "/v1/runs/abc/events"),
    ("DELETE", "/v1/runs/abc"),
    ("POST", "/v1/models/qwen/qwen3-4b/load"),  # a `:path` parameter with slashes
    ("GET", "/v1/models"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/ui/"),
    ("GET", "/v1/nothing/here"),
    ("GET", "/"),
    ("GET", ""),
]


@pytest.fixture(scope="module")
def routes() -> list[APIRoute]:
    app = create_app(make_settings(), MCPSetup(None, {}))
    return [route for route in app.router.routes if isinstance(route, APIRoute)]


def test_every_api_route_is_the_gateways(routes: list[APIRoute]) -> None:
    assert len(routes) > 30
    assert all(type(route) is Route for route in routes), [r.path for r in routes if type(r) is not Route]


@pytest.mark.parametrize(("method", "path"), REQUESTS)
@pytest.mark.parametrize("root_path", ["", "/bridge"])
def test_each_route_matches_as_fastapis_does(routes: list[APIRoute], method: str, path: str, root_path: str) -> None:
    full = root_path + path
    for route in routes:
        scope: dict[str, Any] = {"type": "http", "method": method, "path": full, "root_path": root_path}
        assert route.matches(dict(scope)) == APIRoute.matches(route, dict(scope)), (route.path, method, full)


def test_a_request_is_matched_by_one_route(routes: list[APIRoute]) -> None:
    scope = {"type": "http", "method": "POST", "path": "/v1/mcp/servers/everything/tools/echo", "root_path": ""}
    matched = [route.path for route in routes if route.matches(dict(scope))[0].name == "FULL"]
    assert matched == ["/v1/mcp/servers/{name}/tools/{tool}"]
