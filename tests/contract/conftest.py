"""Fixtures for the contract tests: the exported document, and an mcp.json of well-behaved real servers
for the gateway of a module (`bridge`, `live`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, mcp_servers_json

OPENAPI_PATH = REPO / "openapi" / "openapi.json"
# servers the fuzzer and the SDK test may call with anything: no tool that hangs, crashes or sleeps on purpose
CONTRACT_SERVERS = ("time", "memory", "filesystem")
# the fuzzer may read the files directory, not change it
READ_ONLY_FILESYSTEM = {"disabledTools": ["write_file", "edit_file", "create_directory", "move_file"]}


@pytest.fixture(scope="session")
def openapi_doc() -> dict[str, Any]:
    """openapi/openapi.json as committed."""
    return dict(json.loads(OPENAPI_PATH.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def mcp_json(files: Path) -> Path:
    """The real time, memory and filesystem servers (the latter on `files`, read-only)."""
    servers = mcp_servers_json(str(files))["mcpServers"]
    config = {name: servers[name] for name in CONTRACT_SERVERS}
    config["filesystem"].update(READ_ONLY_FILESYSTEM)
    path = files.parent / "mcp.json"
    path.write_text(json.dumps({"mcpServers": config}))
    return path
