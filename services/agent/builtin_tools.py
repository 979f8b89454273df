"""The gateway's own tools: offered to a model when something was left out to fit its context window
(services/agent/fitting.py answers them; docs/context.md), and when a run's server offers resources
(services/agent/resource_tools.py)."""

from __future__ import annotations

import json
from typing import Any

FIND_TOOLS = "bridge__find_tools"
READ_OUTPUT = "bridge__read_output"
LIST_RESOURCES = "bridge__list_resources"
READ_RESOURCE = "bridge__read_resource"
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


def resource_tools(servers: list[str]) -> list[dict[str, Any]]:
    """The tools that list and read the resources of these servers (those of a run that offer resources)."""
    server = {"type": "string", "enum": servers, "description": "The MCP server whose resources to use"}
    return [
        {
            "type": "function",
            "function": {
                "name": LIST_RESOURCES,
                "description": "List the resources (documents, files, data) the MCP servers offer: uri, name, "
                "description, mime type.",
                "parameters": {"type": "object", "properties": {"server": server}},
            },
        },
        {
            "type": "function",
            "function": {
                "name": READ_RESOURCE,
                "description": f"Read one resource by its uri (as {LIST_RESOURCES} lists it).",
                "parameters": {
                    "type": "object",
                    "properties": {"server": server, "uri": {"type": "string", "description": "The resource's uri"}},
                    "required": ["server", "uri"],
                },
            },
        },
    ]


def argument(arguments: str, name: str) -> Any:
    """One argument of a built-in tool's call (its JSON text), None when absent or not JSON."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return None
    return value.get(name) if isinstance(value, dict) else None
