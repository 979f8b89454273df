"""A tool call cut at the token limit, as llama-server answers it (seen in bench/context.py against the real engine).

SmolLM2-135M (llama-server, `-c 2048`, the filesystem server, the call forced) called `bridge__read_output` and
wrote its `tool_call_id` until max_tokens: llama-server answered 200, `finish_reason: "length"`, one parsed tool
call whose `arguments` is the cut JSON text (`{"tool_call_id": "1234...`). The gateway ran the call (its
arguments read as none: "no cut output has the tool_call_id None"), sent the cut text back in the assistant
message, and llama-server refused that next request with 500 "Failed to parse tool call arguments as JSON": the
run failed 502 `upstream_error`. Expected: a call cut at the token limit is not run (the run ends `length`), and
no request carries arguments that are not JSON.
"""

from __future__ import annotations

import json

from services.lmstudio import ChatResult, ToolCall
from tests.services.agent.fakes import FakePool
from tests.services.agent.test_fitting import CLOCK, WindowedEngine, agent, run

CUT = '{\n    "timezone": "1234567890123456789012345678901234567890'


async def test_a_call_cut_at_the_token_limit_is_not_run_nor_sent_back() -> None:
    pool = FakePool(CLOCK)
    engine = WindowedEngine(
        4096, ChatResult("", [ToolCall("c1", "time__get_current_time", CUT)], "length", "m"), None, None
    )
    result = await run(agent(engine, pool, 4096), "What time is it?", mcp_servers=["time"])
    for payload in engine.payloads:
        for message in payload["messages"]:
            for sent in message.get("tool_calls") or []:
                json.loads(sent["function"]["arguments"])  # llama.cpp refuses a request whose arguments are not JSON
    assert pool.calls == []
    assert result.status == "length"
