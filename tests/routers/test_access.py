"""Access control per API key (issue 17) end to end: one gateway (real socket, real MCP servers, the mock
LM Studio) with a keys file of scoped keys, an admin, and a BRIDGE_API_KEYS key beside them.

- `clock`: the time server only, models `qwen/*`, one run at a time;
- `files-ro`: the filesystem server's read_*/list_* tools only, given by its SHA-256 (`key_sha256`);
- `small`: one model (qwen/qwen3-4b), the time and memory servers;
- `small-burst`: the same scope at 6 requests a minute (used by the rate test only);
- `boss`: an admin; and `ENV_KEY` from BRIDGE_API_KEYS (full access).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import mcp_types as mtypes
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CLIENT_TIMEOUT_S, HELLO, make_settings, served
from tests.helpers import TIME_CALL, assert_problem, call, eventually, finished, mcp_http_session, script, start_run
from tests.mock_lmstudio.fixture import MockLMStudio

pytestmark = pytest.mark.timeout(120)

CHAT = "/v1/chat/completions"
QWEN, CODER, MISTRAL = "qwen/qwen3-4b", "qwen/qwen3-coder-30b", "mistralai/magistral-small-2509"
EMBEDDING = "text-embedding-nomic-embed-text-v1.5"
ALL_SERVERS = {"time", "filesystem", "memory", "everything", "fault"}

CLOCK_KEY = "clock-key-000000000001"
FILES_KEY = "files-key-000000000002"  # only its SHA-256 is in the keys file
SMALL_KEY = "small-key-000000000003"
BURST_KEY = "burst-key-000000000004"
BOSS_KEY = "boss-key-0000000000005"
ENV_KEY = "env-full-key-00000000006"
ENV_NAME = f"api-key-{hashlib.sha256(ENV_KEY.encode()).hexdigest()[:8]}"
BURST_RPM = 6

KEYS = {
    "keys": [
        {"name": "clock", "key": CLOCK_KEY, "servers": ["time"], "models": ["qwen/*"], "max_concurrent_runs": 1},
        {
            "name": "files-ro",
            "key_sha256": hashlib.sha256(FILES_KEY.encode()).hexdigest(),
            "servers": ["filesystem"],
            "tools": ["filesystem__read_*", "filesystem__list_*"],
        },
        {"name": "small", "key": SMALL_KEY, "models": [QWEN], "servers": ["time", "memory"]},
        {
            "name": "small-burst",
            "key": BURST_KEY,
            "models": [QWEN],
            "servers": ["time", "memory"],
            "requests_per_minute": BURST_RPM,
        },
        {"name": "boss", "key": BOSS_KEY, "admin": True},
    ]
}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


CLOCK, FILES, SMALL, BURST, BOSS, ENV = (
    auth(k) for k in (CLOCK_KEY, FILES_KEY, SMALL_KEY, BURST_KEY, BOSS_KEY, ENV_KEY)
)
FINISHED = {"completed", "max_rounds", "timeout", "cancelled", "length", "loop", "failed", "interrupted"}


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.yaml"
    path.write_text(yaml.safe_dump(KEYS, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def gateway_settings(keys_file: Path) -> dict[str, Any]:
    return {
        "keys_file": str(keys_file),
        "api_keys": [ENV_KEY],
        "model_aliases": {"quick": QWEN, "coder": CODER},
    }


# --- helpers ------------------------------------------------------------------------------------------


def forbidden(response: httpx.Response) -> dict[str, Any]:
    """A 403 problem document with code `forbidden`."""
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = dict(response.json())
    assert body["code"] == "forbidden" and body["status"] == 403, body
    return body


def rate_limited(response: httpx.Response) -> dict[str, Any]:
    body = assert_problem(response, 429, "key_rate_limited")
    assert int(response.headers["retry-after"]) >= 1, response.headers
    return body


def offered(request: dict[str, Any]) -> set[str]:
    """The names of the tools a chat request offered the model."""
    return {t["function"]["name"] for t in request["body"].get("tools") or []}


async def server_names(client: httpx.AsyncClient, headers: dict[str, str]) -> set[str]:
    response = await client.get("/v1/mcp/servers", headers=headers)
    assert response.status_code == 200, response.text
    return {s["name"] for s in response.json()["data"]}


async def tool_names(client: httpx.AsyncClient, server: str, headers: dict[str, str]) -> set[str]:
    response = await client.get(f"/v1/mcp/servers/{server}/tools", headers=headers)
    assert response.status_code == 200, response.text
    return {t["name"] for t in response.json()["data"]}


async def model_list(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get("/v1/models", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def stored(client: httpx.AsyncClient, run_id: str, headers: dict[str, str]) -> dict[str, Any]:
    """A run's stored record (the store writes in batches: polled until it is there and finished)."""

    async def ready() -> dict[str, Any] | None:
        response = await client.get(f"/v1/runs/{run_id}", headers=headers)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        record = dict(response.json())
        return record if record["status"] in FINISHED else None

    return dict(await eventually(ready, 10, f"run {run_id} stored"))


async def run_ids(client: httpx.AsyncClient, headers: dict[str, str]) -> set[str]:
    response = await client.get("/v1/runs", params={"limit": 200}, headers=headers)
    assert response.status_code == 200, response.text
    return {item["run_id"] for item in response.json()["data"]}


def tool_problem(result: mtypes.CallToolResult) -> dict[str, Any]:
    assert result.is_error, result
    assert result.structured_content is not None, result
    return dict(result.structured_content)


async def metric_samples(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name in ("bridge_key_runs_total", "bridge_key_tool_calls_total")
    }


def key_runs(samples: dict[Any, float], key: str, status: str = "completed") -> float:
    return samples.get(("bridge_key_runs_total", (("key", key), ("status", status))), 0.0)


def key_tool_calls(samples: dict[Any, float], key: str) -> float:
    return samples.get(("bridge_key_tool_calls_total", (("key", key),)), 0.0)


# --- listings -----------------------------------------------------------------------------------------


async def test_server_listing_shows_only_the_keys_servers(live: httpx.AsyncClient) -> None:
    assert await server_names(live, CLOCK) == {"time"}
    assert await server_names(live, FILES) == {"filesystem"}
    assert await server_names(live, SMALL) == {"time", "memory"}
    assert await server_names(live, BOSS) == ALL_SERVERS
    assert await server_names(live, ENV) == ALL_SERVERS


async def test_tool_listing_shows_only_the_keys_tools(live: httpx.AsyncClient) -> None:
    every = await tool_names(live, "filesystem", BOSS)
    readonly = {t for t in every if t.startswith(("read_", "list_"))}
    assert readonly and "write_file" in every and "edit_file" in every
    assert await tool_names(live, "filesystem", FILES) == readonly
    assert (
        await tool_names(live, "time", CLOCK)
        == await tool_names(live, "time", BOSS)
        == {
            "get_current_time",
            "convert_time",
        }
    )


async def test_tool_listing_of_a_server_outside_the_scope_is_forbidden(live: httpx.AsyncClient) -> None:
    body = forbidden(await live.get("/v1/mcp/servers/filesystem/tools", headers=CLOCK))
    assert body["allowed_servers"] == ["time"] and "time" in body["detail"]
    forbidden(await live.get("/v1/mcp/servers/time/tools", headers=FILES))
    forbidden(await live.get("/v1/mcp/servers/everything/tools", headers=SMALL))


async def test_model_listing_shows_only_the_keys_models(live: httpx.AsyncClient) -> None:
    clock = await model_list(live, CLOCK)
    assert {m["id"] for m in clock["data"]} == {QWEN, CODER}
    assert clock["aliases"] == {"quick": QWEN, "coder": CODER}
    small = await model_list(live, SMALL)
    assert [m["id"] for m in small["data"]] == [QWEN]
    assert small["aliases"] == {"quick": QWEN}  # the alias of a model outside the scope is left out
    every = {m["id"] for m in (await model_list(live, BOSS))["data"]}
    assert {QWEN, CODER, MISTRAL, EMBEDDING} <= every
    assert {m["id"] for m in (await model_list(live, FILES))["data"]} == every  # no `models`: every one


async def test_mcp_front_door_listings_are_scoped(live: httpx.AsyncClient) -> None:
    async with mcp_http_session(live, **CLOCK) as session:
        servers = (await session.call_tool("list_available_mcps", {})).structured_content
        models = (await session.call_tool("list_models", {})).structured_content
    assert servers is not None and [s["name"] for s in servers["data"]] == ["time"]
    assert models is not None and {m["id"] for m in models["data"]} == {QWEN, CODER}


# --- refused before anything runs ---------------------------------------------------------------------


async def test_runs_outside_the_scope_are_refused_before_anything_runs(
    live: httpx.AsyncClient, mock: MockLMStudio, files: Path
) -> None:
    task = "go " + script(calls=[[TIME_CALL]])
    # a server outside the scope
    body = forbidden(
        await live.post("/v1/autonomous", json={"task": task, "mcp_servers": ["filesystem"]}, headers=CLOCK)
    )
    assert body["refused_servers"] == ["filesystem"] and body["allowed_servers"] == ["time"]
    assert "filesystem" in body["detail"] and "time" in body["detail"]
    # a tool outside the scope (of an allowed server)
    body = forbidden(
        await live.post(
            "/v1/autonomous",
            json={"task": task, "mcp_servers": ["filesystem"], "allowed_tools": ["filesystem__write_file"]},
            headers=FILES,
        )
    )
    assert body["refused_tools"] == ["filesystem__write_file"]
    assert body["allowed_tools"] == ["filesystem__read_*", "filesystem__list_*"]
    # a model outside the scope, by id and by alias
    body = forbidden(await live.post("/v1/autonomous", json={"task": task, "model": MISTRAL}, headers=CLOCK))
    assert body["refused_model"] == MISTRAL and body["allowed_models"] == ["qwen/*"] and "qwen/*" in body["detail"]
    body = forbidden(await live.post("/v1/autonomous", json={"task": task, "model": "coder"}, headers=SMALL))
    assert body["refused_model"] == CODER and body["allowed_models"] == [QWEN]
    # the three mirrors
    forbidden(await live.post("/v1/autonomous/with-mcp", json={"task": task, "mcp_name": "memory"}, headers=CLOCK))
    forbidden(
        await live.post(
            "/v1/autonomous/with-multiple-mcps", json={"task": task, "mcp_names": ["time", "memory"]}, headers=CLOCK
        )
    )
    forbidden(await live.post("/v1/autonomous/discover", json={"task": task, "model": CODER}, headers=SMALL))
    # streamed: refused before the stream opens
    forbidden(
        await live.post("/v1/autonomous", json={"task": task, "mcp_servers": ["fault"], "stream": True}, headers=SMALL)
    )
    # a background run
    body = forbidden(await live.post("/v1/runs", json={"task": task, "mcp_servers": ["memory"]}, headers=CLOCK))
    assert body["refused_servers"] == ["memory"]
    forbidden(await live.post("/v1/runs", json={"task": task, "model": MISTRAL}, headers=SMALL))
    # a chat completion with MCP servers, and a plain (pass-through) one with a model outside the scope
    messages = [{"role": "user", "content": task}]
    forbidden(await live.post(CHAT, json={"messages": messages, "mcp_servers": ["filesystem"]}, headers=CLOCK))
    forbidden(await live.post(CHAT, json={"model": QWEN, "messages": messages, "mcp_servers": ["time"]}, headers=FILES))
    body = forbidden(await live.post(CHAT, json={"model": MISTRAL, "messages": messages}, headers=CLOCK))
    assert body["refused_model"] == MISTRAL
    forbidden(await live.post(CHAT, json={"model": CODER, "messages": messages, "stream": True}, headers=SMALL))
    forbidden(await live.post("/v1/completions", json={"model": MISTRAL, "prompt": "Once"}, headers=SMALL))
    forbidden(await live.post("/v1/embeddings", json={"model": EMBEDDING, "input": "x"}, headers=CLOCK))

    assert await mock.chat_requests() == []  # LM Studio was never asked
    assert not [r for r in await mock.requests() if r["path"] in ("/v1/completions", "/v1/embeddings")]
    runs = await run_ids(live, BOSS)
    records = [(await live.get(f"/v1/runs/{r}", headers=BOSS)).json() for r in runs]
    assert not [r for r in records if r["task"] == task and r["key_name"] in ("clock", "files-ro", "small")]


async def test_direct_tool_calls_outside_the_scope_are_forbidden(live: httpx.AsyncClient, files: Path) -> None:
    target = files / "written-by-files-ro.txt"
    body = forbidden(
        await live.post(
            "/v1/mcp/servers/filesystem/tools/write_file",
            json={"path": str(target), "content": "nope"},
            headers=FILES,
        )
    )
    assert body["refused_tools"] == ["filesystem__write_file"]
    assert not target.exists()
    forbidden(
        await live.post(
            "/v1/mcp/servers/filesystem/tools/read_text_file", json={"path": str(files / "hello.txt")}, headers=CLOCK
        )
    )
    forbidden(await live.post("/v1/mcp/servers/memory/tools/read_graph", json={}, headers=CLOCK))
    # within the scope it works
    allowed = await live.post(
        "/v1/mcp/servers/filesystem/tools/read_text_file", json={"path": str(files / "hello.txt")}, headers=FILES
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["content"][0]["text"] == HELLO
    ok = await live.post("/v1/mcp/servers/time/tools/get_current_time", json={"timezone": "UTC"}, headers=CLOCK)
    assert ok.status_code == 200, ok.text


async def test_mcp_front_door_refuses_outside_the_scope(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    task = "go " + script(calls=[[TIME_CALL]])
    async with mcp_http_session(live, **CLOCK) as session:
        refused = [
            await session.call_tool("autonomous_with_mcp", {"mcp_name": "filesystem", "task": task}),
            await session.call_tool("autonomous_with_multiple_mcps", {"mcp_names": ["time", "memory"], "task": task}),
            await session.call_tool("autonomous_discover_and_execute", {"task": task, "model": MISTRAL}),
            await session.call_tool("start_task", {"task": task, "mcp_servers": ["memory"]}),
            await session.call_tool("start_task", {"task": task, "model": MISTRAL}),
        ]
    for result in refused:
        assert tool_problem(result)["code"] == "forbidden", result
    assert tool_problem(refused[0])["allowed_servers"] == ["time"]
    assert await mock.chat_requests() == []
    # the same key's own scope works through the front door
    async with mcp_http_session(live, **CLOCK) as session:
        done = await session.call_tool("autonomous_with_mcp", {"mcp_name": "time", "task": task})
    assert not done.is_error, done
    assert done.structured_content is not None and done.structured_content["status"] == "completed"


async def test_a_wrong_or_missing_key_is_401_on_the_front_door_and_rest(live: httpx.AsyncClient) -> None:
    assert_problem(await live.get("/v1/mcp/servers"), 401, "unauthorized")
    assert_problem(await live.get("/v1/mcp/servers", headers=auth(FILES_KEY + "x")), 401, "unauthorized")
    # the file holds only the digest of FILES_KEY: the digest itself is no key
    assert_problem(
        await live.get("/v1/models", headers=auth(hashlib.sha256(FILES_KEY.encode()).hexdigest())), 401, "unauthorized"
    )
    assert (await live.post("/mcp", json={})).status_code == 401


# --- no tool outside the scope reaches the model ------------------------------------------------------


async def test_the_model_is_offered_only_the_keys_tools(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    every = await tool_names(live, "filesystem", BOSS)
    readonly = {f"filesystem__{t}" for t in every if t.startswith(("read_", "list_"))}
    times = {f"time__{t}" for t in await tool_names(live, "time", BOSS)}

    result = await live.post("/v1/autonomous", json={"task": "hi " + script(answer="ok")}, headers=FILES)
    assert result.status_code == 200, result.text
    assert result.json()["mcp_servers"] == ["filesystem"]
    [request] = await mock.chat_requests()
    assert offered(request) == readonly

    await mock.reset()
    result = await live.post("/v1/autonomous", json={"task": "hi " + script(answer="ok")}, headers=CLOCK)
    assert result.status_code == 200, result.text
    [request] = await mock.chat_requests()
    assert offered(request) == times

    await mock.reset()  # naming the server, and through chat completions with MCP
    chat = {"messages": [{"role": "user", "content": "hi " + script(answer="ok")}], "mcp_servers": ["filesystem"]}
    assert (await live.post(CHAT, json=chat, headers=FILES)).status_code == 200
    [request] = await mock.chat_requests()
    assert offered(request) == readonly

    await mock.reset()  # through the MCP front door's discover
    async with mcp_http_session(live, **SMALL) as session:
        done = await session.call_tool("autonomous_discover_and_execute", {"task": "hi " + script(answer="ok")})
    assert not done.is_error and done.structured_content is not None, done
    [request] = await mock.chat_requests()
    # the memory server lists a resource: the model may list and read it too (tests/routers/test_resources_prompts.py)
    memory = {f"memory__{t}" for t in await tool_names(live, "memory", BOSS)} | RESOURCE_TOOLS
    assert_offered_within(request, times | memory, done.structured_content["context"])

    await mock.reset()  # the admin gets everything
    result = await live.post("/v1/autonomous", json={"task": "hi " + script(answer="ok")}, headers=BOSS)
    assert result.status_code == 200, result.text
    [request] = await mock.chat_requests()
    scope = {f"filesystem__{t}" for t in every} | times | memory
    assert_offered_within(request, scope, result.json()["context"], at_least=True)


BUILTIN = {"bridge__find_tools", "bridge__read_output"}
RESOURCE_TOOLS = {"bridge__list_resources", "bridge__read_resource"}


def assert_offered_within(
    request: dict[str, Any], scope: set[str], context: list[dict[str, Any]], *, at_least: bool = False
) -> None:
    """The request offered exactly the scope's tools, or, when they did not fit the model's window (4,096 tokens
    listed by the mock), the most relevant of them and the search over the rest: never a tool outside the scope."""
    names = offered(request)
    fitted = [f for f in context if f["action"] == "tools"]
    if not fitted:
        assert scope <= names if at_least else names == scope
        return
    assert names >= BUILTIN and (at_least or names - BUILTIN <= scope), names
    [fit] = fitted
    total = int(fit["detail"].split(" tools offered")[0].split(" of ")[1])
    assert total >= len(scope) if at_least else total == len(scope), fit


async def test_a_model_calling_a_tool_outside_the_scope_gets_an_error_not_the_tool(
    live: httpx.AsyncClient, files: Path
) -> None:
    target = files / "written-by-the-model.txt"
    write = call("filesystem__write_file", {"path": str(target), "content": "nope"})
    task = "write " + script(calls=[[write]])
    response = await live.post("/v1/autonomous", json={"task": task, "mcp_servers": ["filesystem"]}, headers=FILES)
    assert response.status_code == 200, response.text
    [step] = response.json()["steps"]
    assert step["is_error"] and "no tool named 'filesystem__write_file'" in step["output"], step
    assert "write_file" not in step["output"].split("Available tools:")[1]
    assert not target.exists()


async def test_allowed_tools_within_the_scope_narrow_the_offer(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    body = {"task": "hi " + script(answer="ok"), "allowed_tools": ["filesystem__read_text_file"]}
    response = await live.post("/v1/autonomous", json=body, headers=FILES)
    assert response.status_code == 200, response.text
    [request] = await mock.chat_requests()
    assert offered(request) == {"filesystem__read_text_file"}


async def test_allowed_tools_of_a_server_outside_the_scope_is_forbidden(live: httpx.AsyncClient) -> None:
    body = {"task": "hi " + script(answer="ok"), "allowed_tools": ["filesystem__read_text_file"]}
    forbidden(await live.post("/v1/autonomous", json=body, headers=CLOCK))


# --- the run store: a key sees its own runs -----------------------------------------------------------


async def test_a_keys_runs_are_invisible_to_other_keys(live: httpx.AsyncClient) -> None:
    run_id = await start_run(live, CLOCK, task="time " + script(calls=[[TIME_CALL]]), mcp_servers=["time"])
    record = await finished(live, run_id, headers=CLOCK)
    assert record["status"] == "completed" and record["key_name"] == "clock"
    [step] = record["steps"]
    assert (step["server"], step["tool"]) == ("time", "get_current_time")

    for other in (FILES, SMALL):
        assert_problem(await live.get(f"/v1/runs/{run_id}", headers=other), 404, "run_not_found")
        assert_problem(await live.get(f"/v1/runs/{run_id}/events", headers=other), 404, "run_not_found")
        assert_problem(await live.post(f"/v1/runs/{run_id}/cancel", headers=other), 404, "run_not_found")
        assert_problem(await live.delete(f"/v1/runs/{run_id}", headers=other), 404, "run_not_found")
        decision = {"decision": "approve"}
        assert_problem(
            await live.post(f"/v1/runs/{run_id}/approvals/call_0_0", json=decision, headers=other), 404, "run_not_found"
        )
        assert run_id not in await run_ids(live, other)
    async with mcp_http_session(live, **FILES) as session:
        result = await session.call_tool("get_task_result", {"run_id": run_id, "wait_s": 0})
    assert tool_problem(result)["code"] == "run_not_found"

    assert run_id in await run_ids(live, CLOCK)
    for admin in (BOSS, ENV):  # an admin sees every run
        assert run_id in await run_ids(live, admin)
        seen = await live.get(f"/v1/runs/{run_id}", headers=admin)
        assert seen.status_code == 200 and seen.json()["key_name"] == "clock"
    # the owner reads its events; the record is still there after the others' attempts
    async with live.stream("GET", f"/v1/runs/{run_id}/events", headers=CLOCK) as events:
        assert events.status_code == 200
        text = (await events.aread()).decode()
    assert "tool_call.completed" in text and "run.completed" in text

    # the owner deletes it
    assert (await live.delete(f"/v1/runs/{run_id}", headers=CLOCK)).status_code == 204
    assert_problem(await live.get(f"/v1/runs/{run_id}", headers=BOSS), 404, "run_not_found")


async def test_every_run_record_carries_its_keys_name(live: httpx.AsyncClient) -> None:
    names = {}
    for headers, name, servers in (
        (FILES, "files-ro", ["filesystem"]),
        (SMALL, "small", ["time"]),
        (ENV, ENV_NAME, ["time"]),
    ):
        response = await live.post(
            "/v1/autonomous", json={"task": "hi " + script(answer="ok"), "mcp_servers": servers}, headers=headers
        )
        assert response.status_code == 200, response.text
        names[name] = response.json()["run_id"]
    for name, run_id in names.items():
        record = await stored(live, run_id, BOSS)
        assert record["key_name"] == name, record
    files_runs = await run_ids(live, FILES)
    assert names["files-ro"] in files_runs and names["small"] not in files_runs and names[ENV_NAME] not in files_runs


# --- per-key limits -----------------------------------------------------------------------------------


async def test_per_key_concurrency(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    slow = "slow " + script(answer="done", hold="clock-busy")
    run_id = await start_run(live, CLOCK, task=slow, mcp_servers=["time"])
    await mock.until_held("clock-busy")  # clock's one run is running until the gate opens
    quick = {"task": "quick " + script(answer="ok"), "mcp_servers": ["time"]}
    body = rate_limited(await live.post("/v1/autonomous", json=quick, headers=CLOCK))
    assert "clock" in body["detail"]
    rate_limited(await live.post("/v1/runs", json=quick, headers=CLOCK))
    rate_limited(
        await live.post(
            CHAT, json={"messages": [{"role": "user", "content": "x"}], "mcp_servers": ["time"]}, headers=CLOCK
        )
    )
    async with mcp_http_session(live, **CLOCK) as session:
        result = await session.call_tool("autonomous_with_mcp", {"mcp_name": "time", "task": quick["task"]})
    assert tool_problem(result)["code"] == "key_rate_limited"
    # a pass-through chat completion is no run: not limited by max_concurrent_runs
    chat = await live.post(CHAT, json={"model": QWEN, "messages": [{"role": "user", "content": "x"}]}, headers=CLOCK)
    assert chat.status_code == 200, chat.text
    # another key is not limited by clock's runs
    other = await live.post("/v1/autonomous", json=quick, headers=SMALL)
    assert other.status_code == 200, other.text

    await mock.release("clock-busy")
    assert (await finished(live, run_id, headers=CLOCK))["status"] == "completed"
    again = await live.post("/v1/autonomous", json=quick, headers=CLOCK)
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "completed"


async def test_per_key_concurrency_slot_comes_back_after_a_cancelled_run(
    live: httpx.AsyncClient, mock: MockLMStudio
) -> None:
    run_id = await start_run(live, CLOCK, task="slow " + script(answer="done", hold="never"), mcp_servers=["time"])
    await mock.until_held("never")  # running, and can only end by being cancelled
    assert (await live.post(f"/v1/runs/{run_id}/cancel", headers=CLOCK)).status_code == 202
    assert (await finished(live, run_id, headers=CLOCK))["status"] == "cancelled"
    again = await live.post(
        "/v1/autonomous", json={"task": "q " + script(answer="ok"), "mcp_servers": ["time"]}, headers=CLOCK
    )
    assert again.status_code == 200, again.text


async def test_per_key_concurrency_slot_comes_back_after_a_refused_or_failed_run(
    live: httpx.AsyncClient, mock: MockLMStudio
) -> None:
    await mock.faults({"kind": "status", "status": 400, "path": CHAT, "body": {"error": "bad request"}})
    failed = await live.post("/v1/autonomous", json={"task": "fail", "mcp_servers": ["time"]}, headers=CLOCK)
    assert_problem(failed, 422, "upstream_rejected")
    unknown = await live.post(
        "/v1/autonomous",
        json={"task": "x", "mcp_servers": ["time"], "allowed_tools": ["time__nope"]},
        headers=CLOCK,
    )
    assert_problem(unknown, 422, "validation_error")
    again = await live.post(
        "/v1/autonomous", json={"task": "q " + script(answer="ok"), "mcp_servers": ["time"]}, headers=CLOCK
    )
    assert again.status_code == 200, again.text


async def test_per_key_rate(live: httpx.AsyncClient) -> None:
    for _ in range(BURST_RPM):
        response = await live.get("/v1/models", headers=BURST)
        assert response.status_code == 200, response.text
    body = rate_limited(await live.get("/v1/models", headers=BURST))
    assert "small-burst" in body["detail"] and str(BURST_RPM) in body["detail"]
    retry = int((await live.get("/v1/mcp/servers", headers=BURST)).headers["retry-after"])
    assert 1 <= retry <= 60 // BURST_RPM
    # every route and the front door count against the same bucket
    rate_limited(await live.post("/v1/autonomous", json={"task": "x"}, headers=BURST))
    assert (await live.post("/mcp", json={}, headers=BURST)).status_code == 429
    # the other keys (same scope, no rate) are not affected
    assert (await live.get("/v1/models", headers=SMALL)).status_code == 200


# --- load and unload: admin only ----------------------------------------------------------------------


async def test_load_and_unload_are_for_admins(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    for headers in (CLOCK, FILES, SMALL):
        body = forbidden(await live.post(f"/v1/models/{CODER}/load", json={"ttl": 600}, headers=headers))
        assert "admin" in body["detail"]
        forbidden(await live.post(f"/v1/models/{QWEN}/unload", headers=headers))
    assert not [r for r in await mock.requests() if r["path"].startswith("/api/v1/models/") and r["method"] == "POST"]
    for headers in (BOSS, ENV):
        loaded = await live.post(f"/v1/models/{CODER}/load", json={"ttl": 600}, headers=headers)
        assert loaded.status_code == 200, loaded.text
        unloaded = await live.post(f"/v1/models/{CODER}/unload", headers=headers)
        assert unloaded.status_code == 200, unloaded.text
    assert len([r for r in await mock.requests() if r["path"] == "/api/v1/models/load"]) == 2


# --- metrics per key ------------------------------------------------------------------------------------


async def test_metrics_count_runs_and_tool_calls_per_key(live: httpx.AsyncClient, files: Path) -> None:
    before = await metric_samples(live)
    read = call("filesystem__read_text_file", {"path": str(files / "hello.txt")})
    for _ in range(2):
        task = "read " + script(calls=[[read, read]])
        response = await live.post("/v1/autonomous", json={"task": task}, headers=FILES)
        assert response.status_code == 200 and response.json()["status"] == "completed", response.text
    task = "time " + script(calls=[[TIME_CALL]])
    response = await live.post("/v1/autonomous", json={"task": task, "mcp_servers": ["time"]}, headers=CLOCK)
    assert response.status_code == 200 and response.json()["status"] == "completed", response.text
    forbidden(await live.post("/v1/autonomous", json={"task": task, "mcp_servers": ["memory"]}, headers=CLOCK))
    after = await metric_samples(live)

    assert key_runs(after, "files-ro") - key_runs(before, "files-ro") == 2
    assert key_tool_calls(after, "files-ro") - key_tool_calls(before, "files-ro") == 4
    assert key_runs(after, "clock") - key_runs(before, "clock") == 1  # the refused run is no run
    assert key_tool_calls(after, "clock") - key_tool_calls(before, "clock") == 1
    labels = {dict(labels)["key"] for (_, labels) in after}
    assert labels <= {"clock", "files-ro", "small", "small-burst", "boss", ENV_NAME}, labels  # names only


# --- BRIDGE_API_KEYS beside the file ------------------------------------------------------------------


async def test_env_key_has_full_access(live: httpx.AsyncClient, files: Path) -> None:
    assert await server_names(live, ENV) == ALL_SERVERS
    target = files / "written-by-env-key.txt"
    written = await live.post(
        "/v1/mcp/servers/filesystem/tools/write_file", json={"path": str(target), "content": "yes"}, headers=ENV
    )
    assert written.status_code == 200, written.text
    assert target.read_text() == "yes"
    response = await live.post(
        "/v1/autonomous",
        json={"task": "hi " + script(calls=[[TIME_CALL]]), "model": MISTRAL, "mcp_servers": ["time", "memory"]},
        headers=ENV,
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed" and response.json()["model"] == MISTRAL
    record = await stored(live, response.json()["run_id"], ENV)
    assert record["key_name"] == ENV_NAME
    assert json.dumps(record).find(ENV_KEY) == -1  # the key itself is never recorded


# --- a key's run refused by the gateway's own limits gives its slot back -------------------------------


@pytest.fixture
async def one_slot(mock_server: MockLMStudio, mcp_json: Path, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with one run slot, no queue for background runs and a 0.2 s queue timeout for the others;
    `clock` (one run at a time) and `boss` (admin) in its keys file."""
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({"keys": [KEYS["keys"][0], KEYS["keys"][-1]]}))
    settings = make_settings(
        lmstudio_base_url=mock_server.base_url,
        mcp_config=str(mcp_json),
        keys_file=str(keys),
        max_concurrent_runs=1,
        max_queued_runs=0,
        queue_timeout_s=0.2,
    )
    async with served(settings, timeout=CLIENT_TIMEOUT_S) as client:
        yield client


async def hold_the_slot(gateway: httpx.AsyncClient, mock: MockLMStudio) -> tuple[str, str]:
    """A background run (admin key) holding the gateway's one run slot: its LM Studio call waits at a gate of
    the mock until released. (run id, gate)"""
    gate = f"slot-{uuid.uuid4().hex[:8]}"
    held = await start_run(gateway, BOSS, task="slow " + script(answer="done", hold=gate), mcp_servers=[])
    await mock.until_held(gate)
    return held, gate


@pytest.mark.parametrize(
    ("path", "refusal"),
    [("/v1/autonomous", "overloaded"), ("/v1/runs", "queue_full")],
    ids=["run-overloaded", "background-run-queue-full"],
)
async def test_a_run_refused_by_the_gateways_limits_gives_the_keys_slot_back(
    one_slot: httpx.AsyncClient, mock_server: MockLMStudio, path: str, refusal: str
) -> None:
    held, gate = await hold_the_slot(one_slot, mock_server)
    quick = {"task": "q " + script(answer="ok"), "mcp_servers": ["time"]}
    assert_problem(await one_slot.post(path, json=quick, headers=CLOCK), 429, refusal)
    await mock_server.release(gate)
    await finished(one_slot, held, headers=BOSS)
    again = await one_slot.post("/v1/autonomous", json=quick, headers=CLOCK)
    assert again.status_code == 200, again.text  # was 429 key_rate_limited for ever (slot leaked)


# --- what a key is told -------------------------------------------------------------------------------


async def test_an_unknown_model_lists_only_the_keys_models(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    for response in (
        await live.post("/v1/autonomous", json={"task": "x", "model": "nope"}, headers=CLOCK),
        await live.post(CHAT, json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}, headers=CLOCK),
    ):
        body = assert_problem(response, 422, "model_not_found")
        assert set(body["available_models"]) == {QWEN, CODER}, body
        assert body["aliases"] == {"quick": QWEN, "coder": CODER}
        assert MISTRAL not in body["detail"] and EMBEDDING not in body["detail"]
    body = assert_problem(
        await live.post("/v1/autonomous", json={"task": "x", "model": "nope"}, headers=BOSS), 422, "model_not_found"
    )
    assert MISTRAL in body["available_models"]
    assert await mock.chat_requests() == []


async def test_a_file_key_written_in_a_task_is_not_stored(live: httpx.AsyncClient) -> None:
    task = f"my key is {CLOCK_KEY} " + script(answer="ok")
    response = await live.post("/v1/autonomous", json={"task": task, "mcp_servers": []}, headers=CLOCK)
    assert response.status_code == 200, response.text
    record = await stored(live, response.json()["run_id"], CLOCK)
    assert CLOCK_KEY not in json.dumps(record) and record["task"].startswith("my key is ")
