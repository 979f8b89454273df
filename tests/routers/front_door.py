"""What the MCP front door's test modules share: an mcp.json with the time server only, a task that calls it, and
two API keys (alice, bob) scoped to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import TIME_CALL, mcp_servers_json, script

TIME_TASK = "What time is it? " + script(calls=[[TIME_CALL]])
ALICE_KEY, BOB_KEY = "alice-key-00000000000001", "bob-key-0000000000000002"
ALICE, BOB = ({"Authorization": f"Bearer {k}"} for k in (ALICE_KEY, BOB_KEY))


def time_only(files: Path) -> Path:
    """An mcp.json beside `files` with the real time server only."""
    path = files.parent / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"time": mcp_servers_json(str(files))["mcpServers"]["time"]}}))
    return path


def alice_and_bob(directory: Path) -> dict[str, Any]:
    """Gateway settings with a keys file in `directory`: alice and bob, each limited to the time server."""
    keys = {"keys": [{"name": n, "key": k, "servers": ["time"]} for n, k in (("alice", ALICE_KEY), ("bob", BOB_KEY))]}
    path = directory / "keys.yaml"
    path.write_text(yaml.safe_dump(keys))
    return {"keys_file": str(path)}
