"""Why a server failed, as an operator reads it: a dying stdio server's FIRST error lines of stderr (bounded)
beside its last, and a remote server's URL."""

from __future__ import annotations

import shutil
import sys

import pytest

from services.errors import MCPServerUnavailableError
from services.mcp import MCPServerConfig, Transport
from tests.processes import free_port
from tests.services.mcp.conftest import PoolFactory, stdio

NODE = shutil.which("node")


async def failure(make_pool: PoolFactory, cfg: MCPServerConfig) -> str:
    pool = make_pool(cfg)
    with pytest.raises(MCPServerUnavailableError) as info:
        await pool.list_tools(cfg.name)
    status = pool.status()[0]
    assert status.status == "failed" and status.last_error and status.last_error in info.value.detail
    return status.last_error


async def test_node_missing_module_shows_the_cause_not_only_the_stack_end(make_pool: PoolFactory) -> None:
    assert NODE is not None, "node is on every machine the project runs on (the reference MCP servers need it)"
    error = await failure(make_pool, stdio("fs", NODE, "/nonexistent/server-filesystem/dist/index.js"))
    assert "stderr: Error: Cannot find module '/nonexistent/server-filesystem/dist/index.js'" in error, error
    assert error.rstrip().endswith("Node.js " + error.rsplit("Node.js ", 1)[1]), "the last line is there too"


async def test_a_long_stderr_is_bounded_and_starts_at_its_first_error(make_pool: PoolFactory) -> None:
    noise = "print('starting up', file=sys.stderr); "
    body = "print('ValueError: the token is missing', file=sys.stderr); "
    stack = "[print(f'  at frame {i} ' + 'x' * 300, file=sys.stderr) for i in range(200)]; "
    code = f"import sys; {noise}{body}{stack}print('exiting', file=sys.stderr); sys.exit(3)"
    error = await failure(make_pool, stdio("noisy", sys.executable, "-c", code))
    stderr = error.split("stderr: ", 1)[1]
    assert stderr.startswith("ValueError: the token is missing | at frame 0 "), stderr
    assert len(stderr) <= 800 and "frame 150" not in stderr


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_a_remote_server_failure_names_its_url(make_pool: PoolFactory, transport: Transport) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp?token=secret"  # nothing listens there
    cfg = MCPServerConfig(name="remote", transport=transport, url=url)
    error = await failure(make_pool, cfg)
    assert error.endswith(f"({transport.upper()} server at http://127.0.0.1:{url.split(':')[2].split('/')[0]}/mcp)")
    assert "secret" not in error, "the query (which may hold a token) is left out"
