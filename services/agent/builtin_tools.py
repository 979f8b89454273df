"""The gateway's own tools, offered to a model when something was left out to fit its context window
(services/agent/fitting.py answers them; docs/context.md)."""

from __future__ import annotations

from typing import Any

FIND_TOOLS = "bridge__find_tools"
READ_OUTPUT = "bridge__read_output"
READ_HOW = f"call {READ_OUTPUT} with this tool_call_id and an offset to read more"

BUILTIN_TOOLS: dict[str, dict[str, Any]] = {
    FIND_TOOLS: {
        "type": "function",
        "function": {
            "name": FIND_TOOLS,
            "description": "Search the tools that were left out to fit the context window; the ones found are "
            "offered from the next round on.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "What the tool should do"}},
                "required": ["query"],
            },
        },
    },
    READ_OUTPUT: {
        "type": "function",
        "function": {
            "name": READ_OUTPUT,
            "description": "Read more of a tool output that was cut to fit the context window.",
            "parameters": {
                "type": "object",
                "properties": {
                    "tool_call_id": {"type": "string", "description": "The id of the call whose output was cut"},
                    "offset": {"type": "integer", "minimum": 0, "description": "Character offset to read from"},
                    "length": {"type": "integer", "minimum": 1, "description": "Characters to read"},
                },
                "required": ["tool_call_id", "offset"],
            },
        },
    },
}
