"""The gateway's route class. A request is matched against the routes in order until one fits, and FastAPI's
match of one route costs a context lookup, the root path's removal and a compiled regex: about 1 µs a route,
21 µs by the tool call's route (the 19th). A route here first rules itself out by the fixed beginning of its
path (the text before its first `{`), which the regex would need anyway (docs/performance.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope


class Route(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.fixed = path.split("{", 1)[0]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # behind a root path the route's path is compared with the request's path without it: FastAPI's way then
        if not scope.get("root_path") and not scope["path"].startswith(self.fixed):
            return Match.NONE, {}
        return super().matches(scope)
