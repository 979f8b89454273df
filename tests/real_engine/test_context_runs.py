"""The context window against the real engine: llama-server with SmolLM2-135M and `-c 2048` (docs/context.md).

The prompts, the tools (the four reference MCP servers), the window and the engine are real; only the choice to
call is forced. SmolLM2-135M rarely calls a tool by itself, so a recording proxy between the gateway and the
engine (recorder.py `force_a_call`) makes every request that offers tools call exactly one: it adds
`tool_choice: required`, `parallel_tool_calls: false`, the assistant prefill `<tool_call>` and the stop string
`</tool_call>`. The proxy records each request as the engine got it and the engine's answer, with llama-server's
`timings` (`prompt_n`: tokens it read; `cache_n`: tokens it took from its prompt cache).

Asserted for every run: the engine never refuses a prompt (every answer is a 200; the engine's own count of
each prompt plus its max_tokens is within the window); the run ends honestly (never `failed`, nor
`context_exceeded` here: everything fits); every compaction the requests show is a `context.fitted` history
event; and between compactions each request re-processes only its new tokens (`prompt_n` is about what it
added to the previous prompt, `cache_n` covers the previous prompt), counted from the engine's timings.

Two slots with `--kv-unified`, as in the rest of the lane: the runs here are sequential, and llama-server gives
each request the slot whose cached prompt it shares the most with, so one slot holds a run's prefix.
The small model repeats its call round after round; BRIDGE_REPEAT_CALL_LIMIT is raised so that the rounds run
(the repeat guard is not what is measured here).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings, served
from tests.helpers import events_of, finished, mcp_servers_json
from tests.real_engine.engine import RealEngine, running_engine
from tests.real_engine.recorder import (
    Exchange,
    Recorder,
    Reuse,
    force_a_call,
    prompt_reuse,
    recording_proxy,
    whole_reads,
)

pytestmark = [pytest.mark.real_engine, pytest.mark.timeout(900)]

WINDOW = 2048
RUN_TIMEOUT_S = 800.0
HONEST_END = {"completed", "max_rounds", "loop", "length"}
REFERENCE_SERVERS = ("time", "filesystem", "memory", "everything")
FILE_LINES = 2400  # 88 characters a line: 211,200 bytes


def file_text() -> str:
    return "".join(
        f"line {i:05d}: the quick brown fox jumps over the lazy dog while measuring context windows\n"
        for i in range(FILE_LINES)
    )


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine_2k() -> Iterator[RealEngine]:
    """The lane's llama-server with a 2,048-token context (every slot may use all of it: --kv-unified)."""
    with running_engine(["--ctx-size", str(WINDOW)]) as engine:
        assert engine.context_length == WINDOW
        yield engine


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("context-files")
    (root / "report.txt").write_text(file_text())
    return root


@pytest.fixture(scope="module")
def mcp_config(files: Path) -> Path:
    """The four reference servers, nothing else (a run without `mcp_servers` gets every one of them)."""
    servers = mcp_servers_json(str(files))["mcpServers"]
    path = files.parent / "context-mcp.json"
    path.write_text(json.dumps({"mcpServers": {name: servers[name] for name in REFERENCE_SERVERS}}))
    return path


@pytest.fixture(scope="module")
async def forced(engine_2k: RealEngine, mcp_config: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Recorder]]:
    """The gateway, its LM Studio the forcing, recording proxy in front of the 2,048-token engine."""
    async with recording_proxy(engine_2k.base_url, force_a_call) as (url, recorder):
        settings = make_settings(
            lmstudio_base_url=url,
            mcp_config=str(mcp_config),
            log_level="WARNING",
            repeat_call_limit=100,
            run_timeout_s=RUN_TIMEOUT_S,
        )
        async with served(settings, timeout=RUN_TIMEOUT_S) as client:
            yield client, recorder


async def test_the_gateway_knows_the_engines_window(forced: tuple[httpx.AsyncClient, Recorder]) -> None:
    """The window comes from llama-server's listing (`meta.n_ctx`), not from BRIDGE_CONTEXT_DEFAULT_TOKENS (4096)."""
    client, _ = forced
    response = await client.get("/v1/models")
    assert response.status_code == 200, response.text
    [model] = response.json()["data"]
    assert model["loaded_context_length"] == WINDOW


async def fitted_run(
    forced: tuple[httpx.AsyncClient, Recorder], body: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[Exchange], list[Reuse]]:
    """A stored run (`POST /v1/runs`) to its end: its record, its `context.fitted` events, what the engine got and
    answered, and the engine's prompt processing of each request; the common assertions checked."""
    client, recorder = forced
    recorder.exchanges.clear()
    response = await client.post("/v1/runs", json={"temperature": 0, **body})
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    run = await finished(client, run_id, RUN_TIMEOUT_S + 30)
    fitted = [frame.data for frame in await events_of(client, run_id) if frame.event == "context.fitted"]
    exchanges = list(recorder.exchanges)
    reuse = prompt_reuse(exchanges)
    report(run, fitted, exchanges, reuse)

    # the engine never refused a prompt: each answer a 200, each prompt (the engine's count) + max_tokens within
    for exchange in exchanges:
        assert exchange.status == 200, exchange.response
        assert exchange.response["usage"]["prompt_tokens"] + exchange.request["max_tokens"] <= WINDOW
    # an honest end (nothing here is too big to fit)
    assert run["status"] in HONEST_END, (run["status"], run["warnings"])
    assert run["output"]
    # the record's fitting actions are the events
    assert [f["action"] for f in run["context"]] == [f["action"] for f in fitted]
    # every compaction the requests show is a history event of that round or the one before
    history_rounds = {f["round"] for f in fitted if f["action"] == "history"}
    for item in reuse:
        if item.kind == "compacted":
            round_no = item.index + 1  # one request per round (no request was refused and sent again)
            assert history_rounds & {round_no - 1, round_no}, (item, fitted)
    # between compactions, only the new tokens are read
    for item in reuse:
        if item.kind == "continued":
            assert item.only_new, item
    return run, fitted, exchanges, reuse


def report(run: dict[str, Any], fitted: list[dict[str, Any]], exchanges: list[Exchange], reuse: list[Reuse]) -> None:
    """What the gateway and the engine did (shown with `pytest -s`, and in a failure's captured output)."""
    print(f"\n{run['status']} after {run['rounds']} round(s), {run['duration_ms'] / 1000:.0f} s; {run['warnings']}")
    for step in run["steps"]:
        what = f"{step['name']} {step['arguments']} error={step['is_error']}"
        print(f"  step r{step['round']} {what}: {len(step['output'])} chars")
    for fit in fitted:
        tokens = f"{fit['tokens_before']} -> {fit['tokens_after']}"
        print(f"  fitted r{fit['round']} {fit['action']}: {tokens}; {fit['detail']}")
    for item, exchange in zip(reuse, exchanges, strict=True):
        choice = exchange.response["choices"][0]
        calls = [c["function"]["name"] for c in choice["message"].get("tool_calls") or []]
        print(
            f"  request {item.index}: {item.kind}, {len(exchange.request.get('tools') or [])} tools, prompt "
            f"{item.prompt_tokens} (+{item.added}), read {item.processed}, cached {item.cached}; "
            f"{choice['finish_reason']} {calls}"
        )


def offered(exchange: Exchange) -> set[str]:
    return {t["function"]["name"] for t in exchange.request.get("tools") or []}


# --- the cases -----------------------------------------------------------------------------------------


async def test_a_200_kb_file_read_through_the_filesystem_server(
    forced: tuple[httpx.AsyncClient, Recorder], files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model's reads ask for the whole file (`whole_reads`: which part it asks for is not what is tested)."""
    monkeypatch.setattr(forced[1], "answer", whole_reads)
    path = files / "report.txt"
    body = {"task": f"Read the file {path} and tell me its last line.", "mcp_servers": ["filesystem"], "max_rounds": 3}
    run, fitted, exchanges, reuse = await fitted_run(forced, body)

    reads = [s for s in run["steps"] if s["tool"] in ("read_text_file", "read_file") and not s["is_error"]]
    assert reads, "the forced calls were expected to read the file"
    whole = [s for s in reads if len(s["output"]) >= 200_000]
    assert whole, "the reads were expected to return all of it (whole_reads drops head and tail)"
    big = whole[0]
    assert big["output"] == path.read_text()  # the record keeps all of it
    cuts = [f for f in fitted if f["action"] == "output" and big["tool_call_id"] in f["detail"]]
    assert cuts and cuts[0]["tokens_after"] < cuts[0]["tokens_before"]
    # the request after the read: the output's beginning and end, the cut marker, and the tool to read more
    after = exchanges[big["round"]]
    [sent] = [m for m in after.request["messages"] if m.get("tool_call_id") == big["tool_call_id"]]
    assert sent["content"].startswith("line 00000:")  # the beginning, as the model saw it
    assert "cut by lmstudio-bridge to fit the context window" in sent["content"]
    assert "bridge__read_output" in offered(after)
    assert reuse[1].kind == "continued"  # the first read added to the prompt; nothing before it changed


async def test_all_four_reference_servers_without_mcp_servers(forced: tuple[httpx.AsyncClient, Recorder]) -> None:
    run, fitted, exchanges, reuse = await fitted_run(forced, {"task": "What time is it in Tokyo?", "max_rounds": 2})

    assert sorted(run["mcp_servers"]) == sorted(REFERENCE_SERVERS)
    [tools] = [f for f in fitted if f["action"] == "tools"]
    assert tools["tokens_before"] > WINDOW  # the four servers' tools alone are more than the window
    budget = WINDOW - WINDOW // 4 - math.ceil(WINDOW * 0.05)  # the answer's and the margin's default shares
    assert tools["tokens_after"] <= budget // 2  # within the tools' share of the prompt budget
    first = offered(exchanges[0])
    assert "bridge__find_tools" in first and len(first) < 10
    assert any(name.startswith("time__") for name in first)  # the task's tools ranked first
    assert run["steps"] and all(s["name"] in first or s["name"].startswith("bridge__") for s in run["steps"])
    assert [r.kind for r in reuse[1 : run["rounds"]]] == ["continued"] * (run["rounds"] - 1)


async def test_a_ten_round_run(forced: tuple[httpx.AsyncClient, Recorder]) -> None:
    body = {"task": "What time is it in Paris?", "mcp_servers": ["time"], "max_rounds": 10}
    run, fitted, exchanges, reuse = await fitted_run(forced, body)

    assert run["status"] == "max_rounds" and run["rounds"] == 10 and len(run["steps"]) == 10
    assert len(exchanges) == 11  # ten rounds with tools, then the final answer without
    compactions = [r for r in reuse if r.kind == "compacted"]
    assert compactions, "ten rounds of the time server do not fit 2,048 tokens whole"
    # large steps: a compaction is followed by requests that continue it
    continued = [r for r in reuse if r.kind == "continued"]
    assert len(continued) >= 2 * len(compactions)
    assert [f["action"] for f in fitted].count("history") == len(compactions)
