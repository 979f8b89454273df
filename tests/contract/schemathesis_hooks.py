"""Schemathesis hooks (loaded by the CLI through SCHEMATHESIS_HOOKS): steer part of the generated cases
to the live gateway's real servers, tools and models, so the fuzzing reaches them, not only 404s and 422s.

The targets come from the JSON file named by BRIDGE_FUZZ_TARGETS, written by the test from the live
gateway: {"servers": {"time": [...tools]}, "calls": [[server, tool, good arguments or null]], "models": [...],
"script": the mock LM Studio markup appended to steered tasks}.
Cases are steered round-robin (deterministic, like the generation): one case in each cycle keeps its
generated values. Only positive cases are steered, and only with valid values, so a negative case stays
negative and a positive one positive.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import schemathesis

TARGETS: dict[str, Any] = json.loads(Path(os.environ["BRIDGE_FUZZ_TARGETS"]).read_text(encoding="utf-8"))
SERVERS: list[str] = sorted(TARGETS["servers"])
# Steered operations. A case hook on an operation whose only input is a path parameter (list tools, unload)
# slows its generation down several times over; their examples (name=time, model_id=qwen/qwen3-4b) and the
# values schemathesis learns from responses already reach real names.
STEERED = r"^/v1/(autonomous.*|mcp/servers/\{name\}/tools/\{tool\}|models/\{model_id\}/load)$"
CALLS: list[tuple[str, str, dict[str, Any] | None]] = [tuple(call) for call in TARGETS["calls"]]
MODELS: list[str] = TARGETS["models"]
SCRIPT: str = TARGETS["script"]
TASK_MAX = 20_000
_turn = itertools.count()


def _pick(options: list[Any]) -> Any:
    """The next option round-robin, or None (keep the generated value) once per cycle."""
    index = next(_turn) % (len(options) + 1)
    return options[index] if index < len(options) else None


def _positive(case: Any) -> bool:
    meta = getattr(case, "meta", None)
    mode = getattr(getattr(meta, "generation", None), "mode", None)
    return str(getattr(mode, "value", mode)) == "positive"


def _names(value: Any, min_items: int) -> bool:
    return isinstance(value, list) and len(value) >= min_items and all(isinstance(v, str) for v in value)


def _steer_tool_call(case: Any) -> None:
    call = _pick(CALLS)
    if call is not None:
        server, tool, arguments = call
        case.path_parameters = {**case.path_parameters, "name": server, "tool": tool}
        if arguments is not None and isinstance(case.body, dict) and next(_turn) % 2 == 0:
            case.body = dict(arguments)


def _steer_run(path: str, case: Any) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    servers = _pick([[name] for name in SERVERS] + [SERVERS])
    if servers is None:
        return
    body = dict(body)
    if isinstance(body.get("task"), str) and 1 <= len(body["task"]) <= TASK_MAX - len(SCRIPT):
        body["task"] += SCRIPT
    if path.endswith("/with-mcp") and isinstance(body.get("mcp_name"), str) and body["mcp_name"]:
        body["mcp_name"] = servers[0]
    elif path.endswith("/with-multiple-mcps") and _names(body.get("mcp_names"), 1):
        body["mcp_names"] = servers
    elif path.endswith("/autonomous") and _names(body.get("mcp_servers"), 0):
        body["mcp_servers"] = servers
    if isinstance(body.get("model"), str):
        body["model"] = MODELS[next(_turn) % len(MODELS)]
    case.body = body


@schemathesis.hook.apply_to(path_regex=STEERED)  # type: ignore[attr-defined, untyped-decorator]  # set at runtime
def map_case(context: Any, case: Any) -> Any:
    if not _positive(case):
        return case
    path = str(getattr(context.operation, "path", ""))
    if path.endswith("/tools/{tool}"):
        _steer_tool_call(case)
    elif path.endswith("/load"):
        model = _pick(MODELS)
        if model is not None:
            case.path_parameters = {**case.path_parameters, "model_id": model}
    elif path.startswith("/v1/autonomous"):
        _steer_run(path, case)
    return case
