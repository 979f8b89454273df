"""MCPPool against real MCP servers (our fault server, mcp-server-time and the npm reference servers)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import psutil
import pytest
from opentelemetry import trace

from app.telemetry import tracer_provider
from services.errors import (
    MCPServerNotFoundError,
    MCPServerUnavailableError,
    MCPToolNotFoundError,
    MCPToolTimeoutError,
)
from services.mcp import MCPPool, MCPServerConfig, validate_arguments
from tests.conftest import make_settings
from tests.helpers import eventually
from tests.services.mcp.conftest import (
    PoolFactory,
    children,
    fault,
    node_server,
    stdio,
    time_server,
)


def state(pool: MCPPool, name: str) -> str:
    return next(s.status for s in pool.status() if s.name == name)


async def server_pid(pool: MCPPool, name: str = "fault") -> int:
    result = await pool.call_tool(name, "pid", {})
    return int(result.text)


# --- real servers ----------------------------------------------------------------------


async def test_real_servers(make_pool: PoolFactory, tmp_path: Path) -> None:
    (tmp_path / "note.txt").write_text("hello from the filesystem")
    pool = make_pool(
        time_server(),
        node_server("fs", "filesystem", str(tmp_path)),
        node_server("memory", "memory", env={"MEMORY_FILE_PATH": str(tmp_path / "memory.jsonl")}),
        node_server("everything", "everything"),
    )
    await pool.start()
    result = await pool.call_tool("time", "get_current_time", {"timezone": "UTC"})
    assert not result.is_error
    assert "UTC" in result.text

    result = await pool.call_tool("fs", "read_text_file", {"path": str(tmp_path / "note.txt")})
    assert result.text == "hello from the filesystem"
    assert result.content[0]["type"] == "text"

    entity = {"name": "Ada", "entityType": "person", "observations": ["wrote the first program"]}
    result = await pool.call_tool("memory", "create_entities", {"entities": [entity]})
    assert not result.is_error
    graph = await pool.call_tool("memory", "read_graph", {})
    assert "Ada" in graph.text

    result = await pool.call_tool("everything", "echo", {"message": "hi"})
    assert not result.is_error
    assert "hi" in result.text

    assert pool.spawn_count == 4
    assert pool.live_sessions() == 4
    assert {s.name: s.status for s in pool.status()} == dict.fromkeys(["time", "fs", "memory", "everything"], "ready")


async def test_unknown_tool_python_and_typescript(make_pool: PoolFactory) -> None:
    pool = make_pool(fault(), time_server(), node_server("everything", "everything"))
    for server in ("fault", "time", "everything"):
        with pytest.raises(MCPToolNotFoundError) as info:
            await pool.call_tool(server, "no_such_tool", {})
        assert info.value.extras["available_tools"]

    # A tool the cached list still shows but the server no longer has: the server answers with
    # MCPError(-32602) (low-level Python servers) or is_error (TypeScript, MCPServer): both -> not found.
    for server in ("fault", "time", "everything"):
        conn = pool._sessions[server]._conn
        assert conn is not None
        ghost = conn.tools[0].model_copy(update={"name": "ghost_tool"})
        conn.tools = [*conn.tools, ghost]
        with pytest.raises(MCPToolNotFoundError):
            await pool.call_tool(server, "ghost_tool", {})
        assert "ghost_tool" not in [t.name for t in await pool.list_tools(server)]


async def test_streamable_http_transport(make_pool: PoolFactory, unused_tcp_port: int) -> None:
    from tests.services.mcp.conftest import NODE, NODE_PKGS

    entry = NODE_PKGS / "server-everything" / "dist" / "index.js"
    proc = await asyncio.create_subprocess_exec(
        NODE or "node",
        str(entry),
        "streamableHttp",
        env={"PORT": str(unused_tcp_port), "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def accepts() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", unused_tcp_port)
            except OSError:
                return False
            writer.close()
            return True

        await eventually(accepts, 10, "the everything server listening")
        url = f"http://127.0.0.1:{unused_tcp_port}/mcp?token=secret"
        cfg = MCPServerConfig(name="web", transport="http", url=url, headers={"Authorization": "Bearer x"})
        pool = make_pool(cfg)
        result = await pool.call_tool("web", "echo", {"message": "over http"})
        assert "over http" in result.text
        status = pool.status()[0]
        assert status.status == "ready"
        assert status.url == f"http://127.0.0.1:{unused_tcp_port}/mcp"
        assert status.headers == ["Authorization"]
        assert pool.spawn_count == 0
        await pool.aclose()
    finally:
        proc.terminate()
        await proc.wait()


# --- one process, many calls ---------------------------------------------------------------


async def test_sequential_calls_one_process(make_pool: PoolFactory) -> None:
    pool = make_pool(fault())
    for i in range(1000):
        result = await pool.call_tool("fault", "echo", {"text": f"m{i}"})
        assert result.text == f"m{i}"
    assert pool.spawn_count == 1
    assert len(children()) == 1


async def test_concurrent_calls_one_session(make_pool: PoolFactory) -> None:
    pool = make_pool(fault(), max_concurrency=16)
    results = await asyncio.gather(*(pool.call_tool("fault", "add", {"a": i, "b": 1}) for i in range(50)))
    assert [r.structured_content for r in results] == [{"result": i + 1} for i in range(50)]
    assert pool.spawn_count == 1
    assert pool.live_sessions() == 1


async def test_result_shapes(make_pool: PoolFactory) -> None:
    pool = make_pool(fault())
    result = await pool.call_tool("fault", "huge", {"chars": 1_000_000})
    assert len(result.text) == 1_000_000
    result = await pool.call_tool("fault", "fail", {"message": "boom"})
    assert result.is_error
    assert "boom" in result.text
    tracer_provider(make_settings())  # the process's SDK provider, as the app sets it up
    with trace.get_tracer("test").start_as_current_span("caller") as span:  # the SDK puts it in `_meta`
        result = await pool.call_tool("fault", "get_meta", {}, meta={"progress_hint": "x"})
    assert result.structured_content is not None
    assert format(span.get_span_context().trace_id, "032x") in result.structured_content["traceparent"]
    tools = {t.name: t for t in await pool.list_tools("fault")}
    assert validate_arguments(tools["broken_schema"].input_schema, {"x": "y"}) == []
    assert tools["echo"].model_name == "fault__echo"


# --- faults ----------------------------------------------------------------------------------


async def test_killed_between_calls_restarts(make_pool: PoolFactory) -> None:
    pool = make_pool(fault())
    pid = await server_pid(pool)
    proc = psutil.Process(pid)
    proc.kill()
    await eventually(lambda: not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE, 5, "the server dead")
    await eventually(lambda: state(pool, "fault") != "ready", 5, "the pool noticing")
    new_pid = await server_pid(pool)
    assert new_pid != pid
    assert pool.spawn_count == 2
    assert state(pool, "fault") == "ready"


async def test_killed_during_call(make_pool: PoolFactory) -> None:
    pool = make_pool(fault())
    await pool.call_tool("fault", "echo", {"text": "warm"})
    with pytest.raises(MCPServerUnavailableError) as info:  # at once: not a timeout (that would be another error)
        await pool.call_tool("fault", "crash", {}, timeout_s=60)
    assert "closed the connection" in info.value.detail
    result = await pool.call_tool("fault", "echo", {"text": "still serving"})
    assert result.text == "still serving"
    assert pool.spawn_count == 2


async def test_hang_times_out_and_session_stays_usable(make_pool: PoolFactory) -> None:
    pool = make_pool(fault())
    pid = await server_pid(pool)
    started = time.monotonic()
    with pytest.raises(MCPToolTimeoutError):
        await pool.call_tool("fault", "hang", {}, timeout_s=0.5)
    assert time.monotonic() - started >= 0.5  # not before its time
    result = await pool.call_tool("fault", "echo", {"text": "after hang"})
    assert result.text == "after hang"
    assert await server_pid(pool) == pid
    assert pool.spawn_count == 1


async def test_server_timeout_from_config_wins(make_pool: PoolFactory) -> None:
    pool = make_pool(fault(timeout_s=0.3))
    with pytest.raises(MCPToolTimeoutError):
        await pool.call_tool("fault", "slow", {"seconds": 5}, timeout_s=30)
    assert (await pool.call_tool("fault", "slow", {"seconds": 0.01})).text == "slept"


async def test_crash_on_start(make_pool: PoolFactory) -> None:
    pool = make_pool(fault("bad", "--crash-on-start"))
    with pytest.raises(MCPServerUnavailableError) as info:
        await pool.list_tools("bad")
    assert "could not start" in info.value.detail
    assert "crashing on start" in info.value.detail
    status = pool.status()[0]
    assert status.status == "failed"
    assert status.last_error is not None and "crashing on start" in status.last_error


async def test_missing_command(make_pool: PoolFactory) -> None:
    pool = make_pool(stdio("ghost", "/nonexistent/mcp-server-binary"))
    with pytest.raises(MCPServerUnavailableError) as info:
        await pool.call_tool("ghost", "anything", {})
    assert info.value.detail == (
        "MCP server 'ghost' could not start: command '/nonexistent/mcp-server-binary' not found"
    )
    assert pool.status()[0].status == "failed"
    assert pool.spawn_count == 0


async def test_restart_backoff(make_pool: PoolFactory) -> None:
    pool = make_pool(fault("bad", "--crash-on-start"), restart_backoff_s=30.0, restart_backoff_max_s=60.0)
    with pytest.raises(MCPServerUnavailableError):
        await pool.call_tool("bad", "echo", {"text": "x"}, timeout_s=1)
    with pytest.raises(MCPServerUnavailableError) as info:
        await pool.call_tool("bad", "echo", {"text": "x"}, timeout_s=1)
    assert "next restart attempt" in info.value.detail
    assert pool.spawn_count == 1  # refused without a new start


async def test_start_timeout(make_pool: PoolFactory) -> None:
    pool = make_pool(fault("sleepy", "--slow-start"), start_timeout_s=1.0)
    with pytest.raises(MCPServerUnavailableError) as info:
        await pool.list_tools("sleepy")
    assert "within 1s" in info.value.detail
    assert pool.status()[0].status == "failed"


async def test_single_flight_start(make_pool: PoolFactory) -> None:
    pool = make_pool(fault())
    lists = await asyncio.gather(*(pool.list_tools("fault") for _ in range(20)))
    assert all(len(tools) == len(lists[0]) for tools in lists)
    assert pool.spawn_count == 1


# --- names, filters, notifications, idle -----------------------------------------------------


async def test_unknown_and_disabled_servers(make_pool: PoolFactory) -> None:
    pool = make_pool(fault(), fault("off", disabled=True))
    assert pool.names() == ["fault"]
    with pytest.raises(MCPServerNotFoundError) as info:
        await pool.call_tool("nope", "echo", {})
    assert info.value.extras["available_servers"] == ["fault"]
    with pytest.raises(MCPServerUnavailableError, match=r"disabled in mcp\.json"):
        await pool.list_tools("off")
    assert [s.status for s in pool.status()] == ["idle", "disabled"]


async def test_tool_filters(make_pool: PoolFactory) -> None:
    pool = make_pool(fault(allowed_tools=frozenset({"echo", "add"}), disabled_tools=frozenset({"add"})))
    assert [t.name for t in await pool.list_tools("fault")] == ["echo"]
    with pytest.raises(MCPToolNotFoundError) as info:
        await pool.call_tool("fault", "add", {"a": 1, "b": 2})
    assert info.value.extras["available_tools"] == ["echo"]
    assert pool.status()[0].tools == 1


async def test_list_changed_refresh(make_pool: PoolFactory) -> None:
    pool = make_pool(fault())
    added = (await pool.call_tool("fault", "add_tool", {})).text
    assert added == "dynamic_1"

    async def names() -> set[str]:
        return {t.name for t in await pool.list_tools("fault")}

    async def listed() -> bool:
        return added in await names()

    await eventually(listed, 5, "tools/list_changed picked up")
    assert (await pool.call_tool("fault", added, {})).text == added


async def test_idle_close(make_pool: PoolFactory) -> None:
    pool = make_pool(fault(), idle_s=0.3)
    await pool.start()
    pid = await server_pid(pool)
    await eventually(
        lambda: state(pool, "fault") == "idle" and not psutil.pid_exists(pid), 10, "the idle session closed"
    )
    assert pool.live_sessions() == 0
    assert await server_pid(pool) != pid
    assert pool.spawn_count == 2


async def test_tool_set_collision_safe(make_pool: PoolFactory) -> None:
    pool = make_pool(fault("a.b", allowed_tools=frozenset({"echo"})), fault("a_b", allowed_tools=frozenset({"echo"})))
    tools = await pool.tool_set(["a.b", "a_b"])
    names = [t.model_name for t in tools.tools]
    assert names == ["a_b__echo", "a_b__echo_2"]
    spec = tools.resolve("a_b__echo_2")
    assert spec is not None and (spec.server, spec.name) == ("a_b", "echo")
    assert tools.openai_tools()[0]["function"]["name"] == "a_b__echo"
    assert tools.openai_tools()[0]["type"] == "function"
    assert "properties" in tools.openai_tools()[0]["function"]["parameters"]
    # built once per tool set (the pool hands out the same set while the tool lists last): a new list, same entries
    again = (await pool.tool_set(["a.b", "a_b"])).openai_tools()
    assert again is not tools.openai_tools() and all(a is b for a, b in zip(again, tools.openai_tools(), strict=True))
    with pytest.raises(MCPServerNotFoundError):
        await pool.tool_set(["a.b", "zzz"])


async def test_warmup_records_failures(make_pool: PoolFactory) -> None:
    pool = make_pool(fault(), stdio("ghost", "/nonexistent/cmd", env={"API_KEY": "s3cret"}))
    await pool.start(warmup=True)
    statuses = {s.name: s for s in pool.status()}
    assert statuses["fault"].status == "ready"
    assert statuses["ghost"].status == "failed"
    assert statuses["ghost"].env == ["API_KEY"]
    assert "s3cret" not in json.dumps([s.__dict__ for s in pool.status()])


async def test_aclose_leaves_no_child_process(make_pool: PoolFactory) -> None:
    assert children() == []
    pool = make_pool(fault("f1"), fault("f2"))
    await pool.start()
    await asyncio.gather(pool.call_tool("f1", "echo", {"text": "x"}), pool.call_tool("f2", "echo", {"text": "y"}))
    pending = asyncio.create_task(pool.call_tool("f1", "hang", {}))

    async def in_flight() -> bool:
        return (await pool.call_tool("f1", "running", {})).text == "1"

    await eventually(in_flight, 10, "the hanging call reaching the server")
    assert len(children()) == 2
    await pool.aclose()
    with pytest.raises(MCPServerUnavailableError):
        await pending
    assert children() == []
    assert pool.live_sessions() == 0
    with pytest.raises(MCPServerUnavailableError):
        await pool.call_tool("f1", "echo", {"text": "x"})
