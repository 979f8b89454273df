"""Shared fixtures for the services tests: server configs for real MCP servers and a pool factory."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from services.mcp import MCPPool, MCPServerConfig

ROOT = Path(__file__).resolve().parents[3]
NODE_PKGS = ROOT / "node_modules" / "@modelcontextprotocol"
NODE = shutil.which("node")


def stdio(name: str, command: str, *args: str, **kw: Any) -> MCPServerConfig:
    return MCPServerConfig(name=name, transport="stdio", command=command, args=tuple(args), cwd=str(ROOT), **kw)


def fault(name: str = "fault", *args: str, **kw: Any) -> MCPServerConfig:
    """Our fault server (tests/mcp_servers/fault_server.py)."""
    return stdio(name, sys.executable, "-m", "tests.mcp_servers.fault_server", *args, **kw)


def node_server(name: str, package: str, *args: str, **kw: Any) -> MCPServerConfig:
    entry = NODE_PKGS / f"server-{package}" / "dist" / "index.js"
    return stdio(name, NODE or "node", str(entry), *args, **kw)


def time_server(name: str = "time", **kw: Any) -> MCPServerConfig:
    return stdio(name, sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC", **kw)


_MCP_MARKERS = ("fault_server", "mcp_server_time", "@modelcontextprotocol")


def children() -> list[psutil.Process]:
    """Live MCP server processes below this test process (other suites may run their own helpers)."""
    out: list[psutil.Process] = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(proc.cmdline())
            if proc.status() != psutil.STATUS_ZOMBIE and any(m in cmdline for m in _MCP_MARKERS):
                out.append(proc)
        except psutil.Error:
            continue
    return out


PoolFactory = Callable[..., MCPPool]


@pytest.fixture
async def make_pool() -> AsyncIterator[PoolFactory]:
    """Build pools that are closed after the test (fast restart backoff by default)."""
    pools: list[MCPPool] = []

    def factory(*servers: MCPServerConfig, **kw: Any) -> MCPPool:
        kw.setdefault("restart_backoff_s", 0.05)
        kw.setdefault("restart_backoff_max_s", 0.2)
        kw.setdefault("start_timeout_s", 20.0)
        pool = MCPPool({s.name: s for s in servers}, **kw)
        pools.append(pool)
        return pool

    yield factory
    for pool in pools:
        await pool.aclose()
