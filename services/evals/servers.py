"""The eval's own MCP servers, the reference ones, confined to a scratch directory: `time` (PyPI
`mcp-server-time`, run by this Python), `filesystem` and `memory` (npm `@modelcontextprotocol/server-*`, from a
`node_modules` found beside the working directory or the package, else through `npx -y`)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from services.evals.tasks import Scratch
from services.mcp import MCPServerConfig

EVAL_SERVERS = ("time", "filesystem", "memory")


def _node_server(package: str, search: list[Path]) -> tuple[str, tuple[str, ...]]:
    for base in search:
        script = base / "node_modules" / "@modelcontextprotocol" / f"server-{package}" / "dist" / "index.js"
        if script.is_file():
            return "node", (str(script),)
    return "npx", ("-y", f"@modelcontextprotocol/server-{package}")


def eval_servers(scratch: Scratch, search: list[Path] | None = None) -> dict[str, MCPServerConfig]:
    """mcp.json entries (parsed) of the eval's servers over `scratch`."""
    where = search if search is not None else [Path.cwd(), Path(__file__).resolve().parents[2]]
    fs_command, fs_args = _node_server("filesystem", where)
    mem_command, mem_args = _node_server("memory", where)
    return {
        "time": MCPServerConfig(
            "time", "stdio", command=sys.executable, args=("-m", "mcp_server_time", "--local-timezone", "UTC")
        ),
        "filesystem": MCPServerConfig("filesystem", "stdio", command=fs_command, args=(*fs_args, str(scratch.files))),
        "memory": MCPServerConfig(
            "memory", "stdio", command=mem_command, args=mem_args, env={"MEMORY_FILE_PATH": str(scratch.memory)}
        ),
    }


class ScratchDir:
    """A new scratch place (a temporary directory), removed on exit unless `keep`."""

    def __init__(self, keep: bool = False) -> None:
        self._keep = keep
        self.path = Path(tempfile.mkdtemp(prefix="bridge-eval-"))
        (self.path / "files").mkdir()
        self.scratch = Scratch(self.path / "files", self.path / "memory.jsonl")

    def __enter__(self) -> Scratch:
        return self.scratch

    def __exit__(self, *exc: object) -> None:
        if not self._keep:
            shutil.rmtree(self.path, ignore_errors=True)
