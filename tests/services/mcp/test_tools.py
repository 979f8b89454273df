"""Model-facing tool names, and the wire shape of the tool types."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from services.mcp import VALID_TOOL_NAME, ServerStatus, ToolNameMap, ToolResult, ToolSet, ToolSpec, model_tool_name


def test_model_tool_name_basic() -> None:
    assert model_tool_name("fs", "read_text_file") == "fs__read_text_file"
    assert model_tool_name("my server", "get.weather/now") == "my_server__get_weather_now"
    assert model_tool_name("ünï", "tool") == "_n___tool"


def test_model_tool_name_long_is_stable_and_valid() -> None:
    long_tool = "t" * 100
    a = model_tool_name("server", long_tool)
    assert len(a) == 64
    assert VALID_TOOL_NAME.match(a)
    assert a == model_tool_name("server", long_tool)
    assert a != model_tool_name("server", long_tool + "x")


def test_tool_name_map_collisions() -> None:
    pairs = [("a.b", "echo"), ("a_b", "echo"), ("a b", "echo"), ("fs", "read")]
    names = ToolNameMap(pairs)
    assert names.name_for("a.b", "echo") == "a_b__echo"
    assert names.name_for("a_b", "echo") == "a_b__echo_2"
    assert names.name_for("a b", "echo") == "a_b__echo_3"
    for pair in pairs:
        name = names.name_for(*pair)
        assert VALID_TOOL_NAME.match(name)
        assert names.resolve(name) == pair
    assert names.resolve("nope") is None
    assert len(names) == 4


def test_tool_name_map_long_collisions() -> None:
    pairs = [("s", "x" * 80 + "!"), ("s", "x" * 80 + "?")]
    names = ToolNameMap(pairs)
    got = [names.name_for(*p) for p in pairs]
    assert len(set(got)) == 2
    assert all(VALID_TOOL_NAME.match(n) for n in got)


def test_tool_set_named_is_collision_safe() -> None:
    spec = ToolSpec(name="echo", model_name="", description="", input_schema={}, server="a.b")
    tools = ToolSet.named([spec, ToolSpec(name="echo", model_name="", description="", input_schema={}, server="a_b")])
    assert [t.model_name for t in tools.tools] == ["a_b__echo", "a_b__echo_2"]
    assert tools.resolve("a_b__echo") == ToolSpec("echo", "a_b__echo", "", {}, "a.b")
    assert tools.resolve("nope") is None


def _wire(value: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(TypeAdapter(type(value)).dump_json(value))
    return result


def test_wire_shapes_leave_out_internal_fields() -> None:
    spec = ToolSpec(name="t", model_name="s__t", description="d", input_schema={"type": "object"}, server="s")
    assert _wire(spec) == {
        "name": "t",
        "model_name": "s__t",
        "description": "d",
        "input_schema": {"type": "object"},
        "annotations": None,
        "destructive": True,
    }
    result = ToolResult(content=[{"type": "text", "text": "hi"}], text="hi", structured_content=None, is_error=False)
    assert list(_wire(result)) == ["content", "structured_content", "is_error", "timeout_s", "progress_resets"]
    status = ServerStatus("s", "stdio", "idle", None, None, ["K"], [], "cmd", None)
    assert _wire(status)["breaker"] == "closed" and _wire(status)["env"] == ["K"]
    schema = TypeAdapter(ToolResult).json_schema(mode="serialization")
    assert "text" not in schema["properties"] and schema["properties"]["is_error"]["description"]
