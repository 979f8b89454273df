"""Per-tool timeouts and progress: a call's timeout comes from the tool, the server or the caller, and each
progress notification starts it again, up to the hard maximum (our fault server's `progress` tool)."""

from __future__ import annotations

import time

import pytest

from services.errors import MCPToolTimeoutError
from services.mcp import MCPPool
from tests.services.mcp.conftest import PoolFactory, fault

pytestmark = pytest.mark.timeout(120)


def sample(pool: MCPPool, name: str, **labels: str) -> float:
    return pool.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_progress_outlives_the_timeout(make_pool: PoolFactory) -> None:
    pool = make_pool(fault(), call_timeout_s=0.5, progress_max_s=30)
    started = time.monotonic()
    result = await pool.call_tool("fault", "progress", {"seconds": 2.0, "every": 0.1})
    assert time.monotonic() - started >= 2.0  # four times its timeout
    assert result.text == "done" and not result.is_error
    assert result.timeout_s == 0.5
    assert result.progress_resets >= 15  # 20 notifications, some may arrive with the answer
    resets = sample(pool, "bridge_tool_progress_resets_total", server="fault", tool="progress")
    assert resets == result.progress_resets


async def test_progress_is_cut_at_the_hard_maximum(make_pool: PoolFactory) -> None:
    pool = make_pool(fault(), call_timeout_s=0.5, progress_max_s=1.5)
    started = time.monotonic()
    with pytest.raises(MCPToolTimeoutError) as info:
        await pool.call_tool("fault", "progress", {"seconds": 30, "every": 0.1})
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 5.0
    problem = info.value.problem()
    assert problem["limit"] == "hard_max" and problem["timeout_s"] == 0.5
    assert problem["progress_resets"] >= 5
    assert "hard maximum of 1.5s" in problem["detail"]
    assert sample(pool, "bridge_tool_timeouts_total", server="fault", tool="progress", limit="hard_max") == 1
    # the server was told to stop: its call ends, and it still answers
    assert (await pool.call_tool("fault", "echo", {"text": "alive"})).text == "alive"


async def test_a_call_without_progress_is_cut_at_its_timeout(make_pool: PoolFactory) -> None:
    pool = make_pool(fault(), call_timeout_s=0.5, progress_max_s=30)
    started = time.monotonic()
    with pytest.raises(MCPToolTimeoutError) as info:
        await pool.call_tool("fault", "slow", {"seconds": 30})
    assert time.monotonic() - started < 5.0
    assert info.value.extras == {"timeout_s": 0.5, "progress_resets": 0, "limit": "timeout"}
    assert sample(pool, "bridge_tool_timeouts_total", server="fault", tool="slow", limit="timeout") == 1


async def test_progress_that_stops_is_cut_one_timeout_after_the_last_notification(make_pool: PoolFactory) -> None:
    # `progress` with a step longer than the timeout: the first notification never comes in time
    pool = make_pool(fault(), call_timeout_s=0.5, progress_max_s=30)
    with pytest.raises(MCPToolTimeoutError) as info:
        await pool.call_tool("fault", "progress", {"seconds": 20, "every": 10})
    assert info.value.extras["limit"] == "timeout" and info.value.extras["progress_resets"] == 0


async def test_without_a_hard_maximum_progress_extends_nothing(make_pool: PoolFactory) -> None:
    pool = make_pool(fault(), call_timeout_s=0.5, progress_max_s=0)
    with pytest.raises(MCPToolTimeoutError) as info:
        await pool.call_tool("fault", "progress", {"seconds": 30, "every": 0.1})
    assert info.value.extras["limit"] == "timeout" and info.value.extras["progress_resets"] == 0


async def test_per_tool_timeouts_apply(make_pool: PoolFactory) -> None:
    # the tool's own timeout wins over the server's, in both directions; other tools keep the server's
    pool = make_pool(fault(timeout_s=0.4, tool_timeouts={"slow": 5.0, "hang": 0.2}), call_timeout_s=60)
    result = await pool.call_tool("fault", "slow", {"seconds": 1.0})  # longer than the server's 0.4 s
    assert result.text == "slept" and result.timeout_s == 5.0
    with pytest.raises(MCPToolTimeoutError) as info:
        await pool.call_tool("fault", "hang", {})
    assert info.value.extras["timeout_s"] == 0.2
    with pytest.raises(MCPToolTimeoutError) as info:
        await pool.call_tool("fault", "progress", {"seconds": 20, "every": 10})
    assert info.value.extras["timeout_s"] == 0.4
    assert (await pool.call_tool("fault", "echo", {"text": "x"})).timeout_s == 0.4
