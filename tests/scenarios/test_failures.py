"""Failure scenarios: what the gateway answers when LM Studio, an MCP server, a client or the host misbehaves.

Each scenario asserts the exact status and problem `code` (or the run status); `open_gateway` then
checks that the same gateway serves a normal request and that no child process was left behind.
docs/reliability.md lists them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import assert_problem, call, eventually, script
from tests.mock_lmstudio.fixture import MockLMStudio, mock_lmstudio
from tests.processes import free_port
from tests.scenarios.conftest import (
    CHAT,
    FAULT_TOOL_TIMEOUT_S,
    PASS,
    GatewayFactory,
    assert_run,
    chat_fault,
    gateway_process,
    open_breaker,
    scenario_mcp_config,
    wait_half_open,
)

pytestmark = pytest.mark.timeout(120)

MODEL = "qwen/qwen3-4b"
# LM Studio breaker scenarios: every failed run counts once, and the breaker resets quickly
BREAKER = {"breaker_failures": 2, "lmstudio_retries": 0, "breaker_reset_s": 1.5}
HANG = {"kind": "hang"}  # the mock LM Studio never answers (until the client goes away)
GATEWAY_ERRORS = pytest.mark.parametrize("status", [502, 503, 504], ids=lambda s: f"http_{s}")


def chat_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


# --- LM Studio -------------------------------------------------------------------------------------


async def test_lmstudio_refused_then_back(open_gateway: GatewayFactory) -> None:
    port = free_port()
    async with open_gateway(lmstudio_base_url=f"http://127.0.0.1:{port}") as gw:
        refused = await gw.run("anyone there?")
        assert_problem(refused, 503, "upstream_unavailable")
        assert int(refused.headers["retry-after"]) >= 1
        ready = await gw.client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["lmstudio"]["code"] == "upstream_unavailable"
        async with mock_lmstudio(port=port):  # LM Studio comes back on its port
            await gw.serves_normally()


async def test_lmstudio_slow_within_timeout_completes(open_gateway: GatewayFactory) -> None:
    async with open_gateway(lmstudio_read_timeout_s=5) as gw:
        await gw.mock.faults(chat_fault("delay", ms=800))
        assert_run(await gw.run("take your time"), "completed")
        [request] = await gw.mock.chat_requests()
        assert request["status"] == 200 and not request["aborted"]


async def test_lmstudio_hang_times_out(open_gateway: GatewayFactory) -> None:
    async with open_gateway(lmstudio_read_timeout_s=0.5) as gw:
        await gw.mock.faults(chat_fault("hang"))
        assert_problem(await gw.run("hang"), 504, "upstream_timeout")

        async def aborted() -> bool:
            return bool((await gw.mock.chat_requests())[0]["aborted"])

        await eventually(aborted, what="the hung request aborted")


async def test_lmstudio_500_is_not_retried(open_gateway: GatewayFactory) -> None:
    async with open_gateway() as gw:
        await gw.mock.faults(chat_fault("status", status=500))
        assert_problem(await gw.run("boom"), 502, "upstream_error")
        assert [r["status"] for r in await gw.mock.chat_requests()] == [500]


@GATEWAY_ERRORS
async def test_lmstudio_gateway_error_retried_until_spent(open_gateway: GatewayFactory, status: int) -> None:
    async with open_gateway() as gw:  # two retries by default: three attempts
        await gw.mock.faults(*[chat_fault("status", status=status)] * 3)
        assert_problem(await gw.run("down"), 502, "upstream_error")
        assert [r["status"] for r in await gw.mock.chat_requests()] == [status] * 3


@GATEWAY_ERRORS
async def test_lmstudio_single_gateway_error_absorbed(open_gateway: GatewayFactory, status: int) -> None:
    async with open_gateway() as gw:
        await gw.mock.faults(chat_fault("status", status=status))
        assert_run(await gw.run("blip"), "completed")
        assert [r["status"] for r in await gw.mock.chat_requests()] == [status, 200]


async def test_lmstudio_429_retry_after_honoured(open_gateway: GatewayFactory) -> None:
    async with open_gateway() as gw:
        await gw.mock.faults(chat_fault("status", status=429, retry_after=1))
        assert_run(await gw.run("rate limited"), "completed")
        first, second = await gw.mock.chat_requests()
        assert (first["status"], second["status"]) == (429, 200)
        assert second["started"] - first["ended"] >= 1.0  # the mock's own clock


async def test_lmstudio_429_persisting(open_gateway: GatewayFactory) -> None:
    async with open_gateway() as gw:
        await gw.mock.faults(*[chat_fault("status", status=429, retry_after=0)] * 3)
        response = await gw.run("rate limited")
        assert_problem(response, 429, "upstream_rate_limited")
        assert response.headers["retry-after"] == "1"
        assert len(await gw.mock.chat_requests()) == 3


async def test_lmstudio_garbage_json(open_gateway: GatewayFactory) -> None:
    async with open_gateway() as gw:
        await gw.mock.faults(chat_fault("malformed_json"))
        assert_problem(await gw.run("garbage"), 502, "upstream_error")
        assert len(await gw.mock.chat_requests()) == 1


async def test_passthrough_stream_cut_midway(open_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 29: an engine that dies mid-stream gives the client an error chunk in OpenAI's stream shape and
    [DONE], not a cut read (and no ASGI exception)."""
    caplog.set_level(logging.WARNING)
    uvicorn_log = logging.getLogger("uvicorn")  # where "Exception in ASGI application" goes (not propagated)
    async with open_gateway(wire=True) as gw:
        uvicorn_log.addHandler(caplog.handler)  # after uvicorn configured its loggers
        try:
            await gw.mock.faults(chat_fault("cut_stream"))
            body = chat_body("stream " + script(answer="an answer long enough to be cut in pieces"), stream=True)
            async with gw.client.stream("POST", CHAT, json=body) as response:
                assert response.status_code == 200
                lines = [line async for line in response.aiter_lines() if line]
            listed = (await gw.client.get("/v1/models")).json()["data"]
        finally:
            uvicorn_log.removeHandler(caplog.handler)
        # the host that dropped the connection still answers (the gateway pinged it): its models stay as they were
        assert listed and not any(h["state"] == "unreachable" for m in listed for h in m["hosts"]), listed
        # the first chunks may or may not get through (the LM Studio client's transport drops what it had
        # buffered when the connection breaks); the end of the stream always does
        assert lines[-1] == "data: [DONE]"
        error = json.loads(lines[-2].removeprefix("data: "))
        assert (error["code"], error["error"]["code"], error["error"]["type"]) == (
            "upstream_error",
            "upstream_error",
            "server_error",
        )
    logged = [(r.name, r.getMessage()) for r in caplog.records]
    assert any("stream" in message.lower() for _, message in logged), logged  # the cut is logged, as a warning
    assert not any("Exception in ASGI application" in message for _, message in logged), logged
    assert not any(r.exc_info for r in caplog.records), logged  # no traceback anywhere


async def test_passthrough_single_503_absorbed(open_gateway: GatewayFactory) -> None:
    async with open_gateway() as gw:
        await gw.mock.faults(chat_fault("status", status=503))
        response = await gw.client.post(CHAT, json=chat_body("hi " + script(answer="hello")))
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "hello"
        assert [r["status"] for r in await gw.mock.chat_requests()] == [503, 200]


async def test_passthrough_stream_503_before_first_byte_retried(open_gateway: GatewayFactory) -> None:
    async with open_gateway() as gw:
        await gw.mock.faults(chat_fault("status", status=503))
        async with gw.client.stream("POST", CHAT, json=chat_body("hi", stream=True)) as response:
            assert response.status_code == 200
            lines = [line async for line in response.aiter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        assert [r["status"] for r in await gw.mock.chat_requests()] == [503, 200]


async def test_run_answer_cut_midway(open_gateway: GatewayFactory) -> None:
    async with open_gateway() as gw:
        await gw.mock.faults(chat_fault("cut_stream"))
        assert_problem(await gw.run("cut"), 502, "upstream_error")


async def test_streamed_run_answer_cut_midway(open_gateway: GatewayFactory) -> None:
    async with open_gateway() as gw:
        await gw.mock.faults(chat_fault("cut_stream"))
        event, problem, before = await gw.stream_run("cut")
        assert (event, problem["code"], problem["status"]) == ("run.failed", "upstream_error", 502)
        assert before[:2] == ["run.started", "round.started"]


async def test_streamed_run_upstream_500(open_gateway: GatewayFactory) -> None:
    async with open_gateway() as gw:
        await gw.mock.faults(chat_fault("status", status=500))
        event, problem, _ = await gw.stream_run("boom")
        assert (event, problem["code"]) == ("run.failed", "upstream_error")


async def test_model_unloaded_mid_run(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        await gw.mock.faults(PASS, chat_fault("unload"))
        task = "two rounds " + script(calls=[[call("fault__echo", {"text": "round one"})]])
        problem = assert_problem(await gw.run(task, mcp_servers=["fault"]), 422, "model_not_found")
        assert problem["model"] == MODEL and MODEL in problem["available_models"]  # unloaded, not deleted
        assert [r["status"] for r in await gw.mock.chat_requests()] == [
            200,
            400,
        ]  # current LM Studio: 400 "Invalid model identifier"


async def test_model_unloaded_mid_streamed_run(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        await gw.mock.faults(PASS, chat_fault("unload"))
        task = "two rounds " + script(calls=[[call("fault__echo", {"text": "round one"})]])
        event, problem, before = await gw.stream_run(task, mcp_servers=["fault"])
        assert (event, problem["code"], problem["status"]) == ("run.failed", "model_not_found", 422)
        assert "tool_call.completed" in before


async def test_unknown_model_run(open_gateway: GatewayFactory) -> None:
    async with open_gateway() as gw:
        problem = assert_problem(await gw.run("who?", model="nope/nope-7b"), 422, "model_not_found")
        assert MODEL in problem["available_models"]
        assert await gw.mock.chat_requests() == []


async def test_unknown_model_passthrough(open_gateway: GatewayFactory) -> None:
    async with open_gateway() as gw:
        response = await gw.client.post(CHAT, json={**chat_body("who?"), "model": "nope/nope-7b"})
        assert MODEL in assert_problem(response, 422, "model_not_found")["available_models"]


async def test_model_gone_from_lmstudio(open_gateway: GatewayFactory) -> None:
    async with open_gateway() as gw:  # the model list has it, LM Studio answers 404 model_not_found
        await gw.mock.faults(chat_fault("unknown_model"))
        assert_problem(await gw.run("gone"), 422, "model_not_found")
        assert len(await gw.mock.chat_requests()) == 1  # not retried


# --- the LM Studio circuit breaker -------------------------------------------------------------------


async def test_breaker_open_fails_fast(open_gateway: GatewayFactory) -> None:
    async with open_gateway(**{**BREAKER, "breaker_reset_s": 5.0}) as gw:  # open for the whole test
        await open_breaker(gw, failures=2)
        reached = len(await gw.mock.chat_requests())
        # a run that reached LM Studio would hang there: each answer below comes without touching it
        hangs = script(fault={"kind": "hang"})
        for _ in range(3):
            async with asyncio.timeout(10):
                response = await gw.run("still down? " + hangs)
            assert_problem(response, 503, "upstream_unavailable")
            assert 1 <= int(response.headers["retry-after"]) <= 5
        assert len(await gw.mock.chat_requests()) == reached
        ready = await gw.client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["lmstudio"]["breaker"] == "open"
        await wait_half_open(gw, within_s=15)


async def test_breaker_open_on_passthrough(open_gateway: GatewayFactory) -> None:
    async with open_gateway(**BREAKER) as gw:
        await open_breaker(gw, failures=2)
        response = await gw.client.post(CHAT, json=chat_body("down?"))
        assert_problem(response, 503, "upstream_unavailable")
        assert "retry-after" in response.headers
        await wait_half_open(gw, within_s=5)


async def test_breaker_half_open_admits_one_of_20(open_gateway: GatewayFactory) -> None:
    async with open_gateway(**BREAKER) as gw:
        await open_breaker(gw, failures=2)
        await wait_half_open(gw, within_s=5)
        reached = len(await gw.mock.chat_requests())
        await gw.mock.faults(chat_fault("delay", ms=500))  # the trial call takes a while
        responses = await asyncio.gather(*(gw.run(f"caller {i}") for i in range(20)))
        assert len(await gw.mock.chat_requests()) - reached == 1
        assert sorted(r.status_code for r in responses) == [200] + [503] * 19
        for response in responses:
            if response.status_code == 503:
                assert_problem(response, 503, "upstream_unavailable")
                assert "retry-after" in response.headers
        assert await gw.breaker() == "closed"


async def test_breaker_recovery_closes(open_gateway: GatewayFactory) -> None:
    async with open_gateway(**BREAKER) as gw:
        await open_breaker(gw, failures=2)
        assert (await gw.client.get("/readyz")).status_code == 503
        await wait_half_open(gw, within_s=5)
        await gw.serves_normally()  # the trial call
        ready = await gw.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["lmstudio"]["breaker"] == "closed"


async def test_breaker_failed_trial_reopens(open_gateway: GatewayFactory) -> None:
    async with open_gateway(**BREAKER) as gw:
        await open_breaker(gw, failures=2)
        await wait_half_open(gw, within_s=5)
        await gw.mock.faults(chat_fault("status", status=500))
        assert_problem(await gw.run("trial"), 502, "upstream_error")
        assert await gw.breaker() == "open"
        assert_problem(await gw.run("again"), 503, "upstream_unavailable")
        await wait_half_open(gw, within_s=5)


async def test_breaker_ignores_client_errors(open_gateway: GatewayFactory) -> None:
    async with open_gateway(**BREAKER) as gw:
        await gw.mock.faults(*[chat_fault("unknown_model")] * 3)
        for _ in range(3):
            assert_problem(await gw.run("gone"), 422, "model_not_found")
        assert await gw.breaker() == "closed"


async def test_burst_of_six_503_under_16_concurrent_runs(open_gateway: GatewayFactory) -> None:
    async with open_gateway(lmstudio_retry_backoff_s=0.2, lmstudio_retry_backoff_max_s=1.0) as gw:
        await gw.mock.faults(*[chat_fault("status", status=503)] * 6)
        responses = await asyncio.gather(*(gw.run(f"burst {i}") for i in range(16)))
        for response in responses:
            assert_run(response, "completed")
        assert sorted(r["status"] for r in await gw.mock.chat_requests()) == [200] * 16 + [503] * 6
        assert await gw.breaker() == "closed"


# --- MCP servers -------------------------------------------------------------------------------------


async def test_mcp_missing_command(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        problem = assert_problem(await gw.run("ghost", mcp_servers=["ghost"]), 503, "mcp_server_unavailable")
        assert "not found" in problem["detail"]
        servers = {s["name"]: s for s in (await gw.client.get("/v1/mcp/servers")).json()["data"]}
        assert servers["ghost"]["status"] == "failed"
        assert await gw.mock.chat_requests() == []


async def test_mcp_broken_servers_left_out_of_default_set(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        result = assert_run(await gw.run("all servers", mcp_servers=None), "completed")
        assert result["mcp_servers"] == ["fault", "fault_timeout"]
        for broken in ("ghost", "crashy"):
            assert any(repr(broken) in warning for warning in result["warnings"]), result["warnings"]


async def test_mcp_crash_at_start(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        problem = assert_problem(await gw.run("crashy", mcp_servers=["crashy"]), 503, "mcp_server_unavailable")
        assert "crashing on start" in problem["detail"]  # the server's stderr is quoted
        assert_problem(await gw.client.get("/v1/mcp/servers/crashy/tools"), 503, "mcp_server_unavailable")


async def test_mcp_crash_mid_call_in_run(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        _, step = await gw.run_tool_call("fault__crash", {})
        assert step["is_error"] and "closed the connection" in step["output"]


async def test_mcp_crash_mid_call_rest(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        problem = assert_problem(await gw.tool("fault", "crash"), 503, "mcp_server_unavailable")
        assert "crash tool called" in problem["detail"]


async def test_mcp_killed_between_calls_restarts(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        pid = await gw.fault_pid()
        psutil.Process(pid).kill()

        async def noticed() -> bool:
            servers = (await gw.client.get("/v1/mcp/servers")).json()["data"]
            return bool(next(s for s in servers if s["name"] == "fault")["status"] != "ready")

        await eventually(noticed, what="the pool noticing the dead server")
        await gw.serves_normally()
        assert await gw.fault_pid() != pid


async def test_mcp_crash_with_calls_in_flight_counts_once(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True, breaker_failures=2) as gw:
        victim = psutil.Process(await gw.fault_pid())
        calls = [asyncio.ensure_future(gw.tool("fault", "slow", seconds=10)) for _ in range(4)]

        async def all_running() -> bool:
            return await gw.fault_running() == 4

        await eventually(all_running, what="the four calls running in the server")
        victim.kill()
        for response in await asyncio.gather(*calls):
            assert_problem(response, 503, "mcp_server_unavailable")
        servers = {s["name"]: s for s in (await gw.client.get("/v1/mcp/servers")).json()["data"]}
        assert servers["fault"]["breaker"] == "closed"  # one crash is one failure, whatever was in flight


async def test_mcp_hang_in_run(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        _, step = await gw.run_tool_call("fault_timeout__hang", {})
        assert step["is_error"] and f"did not answer within {FAULT_TOOL_TIMEOUT_S:g}s" in step["output"]


async def test_mcp_hang_rest(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        assert_problem(await gw.tool("fault_timeout", "hang"), 504, "tool_timeout")


async def test_mcp_breaker_opens_for_one_server(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True, breaker_failures=2, breaker_reset_s=30) as gw:
        for _ in range(2):
            assert_problem(await gw.tool("fault_timeout", "hang"), 504, "tool_timeout")
        response = await gw.tool("fault_timeout", "echo", text="fast fail")
        assert_problem(response, 503, "mcp_server_unavailable")
        assert "retry-after" in response.headers
        servers = {s["name"]: s for s in (await gw.client.get("/v1/mcp/servers")).json()["data"]}
        assert (servers["fault_timeout"]["breaker"], servers["fault"]["breaker"]) == ("open", "closed")


async def test_mcp_huge_output_truncated_in_run(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        task = "call fault__huge " + script(calls=[[call("fault__huge", {"chars": 50_000})]])
        # the mock echoes what it read: more than the 1024 tokens a default 4096-token window leaves an answer
        result = assert_run(await gw.run(task, mcp_servers=["fault"]), "length")
        [step] = result["steps"]
        assert step["output"] == "x" * 50_000 and not step["is_error"]  # the record keeps it whole
        [seen] = [m["content"] for m in (await gw.mock.chat_requests())[-1]["body"]["messages"] if m["role"] == "tool"]
        assert "output truncated by lmstudio-bridge" in seen or "to fit the context window" in seen
        assert len(seen) < 20_000 + 200


async def test_mcp_huge_output_whole_over_rest(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        response = await gw.tool("fault", "huge", chars=50_000)
        assert response.status_code == 200
        assert response.json()["content"][0]["text"] == "x" * 50_000


async def test_mcp_bad_schema_run_still_works(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        tools = (await gw.client.get("/v1/mcp/servers/fault/tools")).json()["data"]
        assert "broken_schema" in {t["name"] for t in tools}
        _, step = await gw.run_tool_call("fault__broken_schema", {"x": "schema-less"})
        assert not step["is_error"] and step["output"] == "schema-less"


async def test_mcp_server_dies_during_shutdown(open_gateway: GatewayFactory) -> None:
    async def kill_soon(victim: psutil.Process) -> None:
        await asyncio.sleep(0.05)
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.kill()

    async with asyncio.timeout(30):  # a hang fails here, not at the pytest timeout
        async with open_gateway(mcp=True) as gw:
            await gw.serves_normally()
            victim = psutil.Process(await gw.fault_pid())
            in_flight = asyncio.ensure_future(gw.tool("fault", "slow", seconds=30))
            await eventually(gw.fault_running, what="the slow call running in the server")
            killer = asyncio.ensure_future(kill_soon(victim))  # fires while the app shuts down
        await killer
        assert_problem(await in_flight, 503, "mcp_server_unavailable")
    assert not victim.is_running()


async def test_mcp_unknown_server(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        problem = assert_problem(await gw.run("who?", mcp_servers=["nope"]), 422, "mcp_server_not_found")
        assert problem["available_servers"] == list(scenario_mcp_config()["mcpServers"])


async def test_mcp_unknown_tool_rest(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        problem = assert_problem(await gw.tool("fault", "nope"), 404, "tool_not_found")
        assert "echo" in problem["available_tools"]


# --- the agent loop --------------------------------------------------------------------------------


async def test_tool_error_step(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        result, step = await gw.run_tool_call("fault__fail", {"message": "disk on fire"})
        assert step["is_error"] and "disk on fire" in step["output"] and "disk on fire" in result["output"]


async def test_malformed_tool_calls_from_model(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        await gw.mock.faults(chat_fault("malformed_tool_args"))
        result = assert_run(await gw.run("call something", mcp_servers=["fault"]), "completed")
        [step] = result["steps"]
        assert step["is_error"] and "not valid JSON" in step["output"]


async def test_unknown_tool_from_model(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        _, step = await gw.run_tool_call("fault__teleport", {})
        assert step["is_error"] and "no tool named 'fault__teleport'" in step["output"]


async def test_max_rounds(open_gateway: GatewayFactory) -> None:
    async with open_gateway(mcp=True) as gw:
        task = "forever " + script(forever=call("fault__echo", {"text": "again"}))
        result = assert_run(await gw.run(task, mcp_servers=["fault"], max_rounds=2), "max_rounds")
        assert result["rounds"] == 2 and result["output"]
        chats = await gw.mock.chat_requests()
        assert len(chats) == 3 and "tools" not in chats[-1]["body"]


async def test_deadline(open_gateway: GatewayFactory) -> None:
    async with open_gateway() as gw:
        result = assert_run(await gw.run("slow " + script(fault=HANG), timeout_s=1), "timeout")
        assert "deadline" in result["output"]

        async def aborted() -> bool:
            return bool((await gw.mock.chat_requests())[0]["aborted"])

        await eventually(aborted, what="LM Studio call abandoned")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_client_disconnect_cancels_the_run(open_gateway: GatewayFactory, stream: bool) -> None:
    # one run slot: if the run kept it, the normal request afterwards would get 429
    async with open_gateway(wire=True, max_concurrent_runs=1, queue_timeout_s=1) as gw:
        request = asyncio.ensure_future(gw.run("slow " + script(fault=HANG), stream=stream))

        async def reached() -> bool:
            return len(await gw.mock.chat_requests()) == 1

        await eventually(reached, what="the run's LM Studio call")
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await request

        async def aborted() -> bool:
            return bool((await gw.mock.chat_requests())[0]["aborted"])

        await eventually(aborted, what="LM Studio call abandoned")


async def test_overload(open_gateway: GatewayFactory) -> None:
    async with open_gateway(max_concurrent_runs=1, queue_timeout_s=0.2) as gw:
        slow = asyncio.ensure_future(gw.run("slow " + script(hold="overload")))
        await gw.mock.until_held("overload")  # the one slot is taken until the gate opens
        response = await gw.run("one more")
        assert_problem(response, 429, "overloaded")
        assert response.headers["retry-after"] == "1"
        await gw.mock.release("overload")
        assert_run(await slow, "completed")


# --- request limits ---------------------------------------------------------------------------------


async def test_oversized_body_with_content_length(open_gateway: GatewayFactory) -> None:
    async with open_gateway(max_body_bytes=4096) as gw:
        assert_problem(await gw.run("x" * 5000), 413, "payload_too_large")


async def test_oversized_body_chunked(open_gateway: GatewayFactory) -> None:
    async def chunks() -> Any:
        yield b'{"task": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    async with open_gateway(wire=True, max_body_bytes=4096) as gw:
        headers = {"content-type": "application/json"}
        response = await gw.client.post("/v1/autonomous", content=chunks(), headers=headers)
        assert "content-length" not in response.request.headers
        assert_problem(response, 413, "payload_too_large")


async def test_task_too_long(open_gateway: GatewayFactory) -> None:
    async with open_gateway() as gw:
        assert_problem(await gw.run("x" * 20_001), 422, "validation_error")


async def test_max_rounds_over_cap(open_gateway: GatewayFactory) -> None:
    async with open_gateway() as gw:
        assert_problem(await gw.run("many", max_rounds=101), 422, "validation_error")


# --- shutting down a real server process ---------------------------------------------------------------


async def test_sigterm_with_runs_in_flight(mock: MockLMStudio, scenario_mcp_json: Path) -> None:
    env = {"LMSTUDIO_BASE_URL": mock.base_url, "MCP_CONFIG": str(scenario_mcp_json), "BRIDGE_SHUTDOWN_GRACE_S": "3"}
    echo = script(calls=[[call("fault__echo", {"text": "hi"})]])
    async with gateway_process(env) as gw:
        assert_run(await gw.run("warm up " + echo, mcp_servers=["fault"]), "completed")
        assert gw.note_children(), "the fault server runs under the gateway"
        short = asyncio.ensure_future(gw.run("short " + script(delay_ms=500)))  # ends within the grace
        long_json = asyncio.ensure_future(gw.run("long " + script(fault=HANG)))  # past any grace
        long_stream = asyncio.ensure_future(gw.stream_run("long " + script(fault=HANG)))

        async def all_in_flight() -> bool:
            return len([r for r in await mock.requests() if r["path"] == CHAT]) == 2 + 3

        await eventually(all_in_flight, what="three runs waiting on LM Studio")
        assert await gw.sigterm() == 0, gw.log_tail()
        assert_run(await short, "completed")
        assert_problem(await long_json, 503, "shutting_down")
        event, problem, _ = await long_stream
        assert (event, problem["code"]) == ("run.failed", "shutting_down")
    # the port is free again, and a new process on it serves a normal run
    async with gateway_process(env, port=gw.port) as again:
        assert_run(await again.run("normal " + echo, mcp_servers=["fault"]), "completed")
        assert await again.sigterm() == 0, again.log_tail()
