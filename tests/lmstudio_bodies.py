"""LM Studio's recorded answers (tests/data/lmstudio_bodies.json), shared by the mock LM Studio and the tests.

`lmstudio_body("unknown_model", model="x", examples="a, b, c")` -> (status, body) with the placeholders filled.
No pytest and no gateway import here: the mock (a separate process) imports this module too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECORDED = Path(__file__).resolve().parent / "data" / "lmstudio_bodies.json"
BODIES: dict[str, dict[str, Any]] = json.loads(RECORDED.read_text(encoding="utf-8"))["bodies"]


def _filled(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, text in values.items():
            value = value.replace("{" + name + "}", text)
        return value
    if isinstance(value, dict):
        return {k: _filled(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(v, values) for v in value]
    return value


def lmstudio_body(name: str, **values: str) -> tuple[int, Any]:
    """The status and body LM Studio answers with (recorded as `name`), placeholders filled from `values`."""
    entry = BODIES[name]
    return int(entry["status"]), _filled(entry["body"], values)


def lmstudio_message(name: str, **values: str) -> str:
    """The error text of a recorded answer: `error` itself when it is a string, else `error.message`."""
    _, body = lmstudio_body(name, **values)
    error = body["error"]
    return str(error if isinstance(error, str) else error["message"])
