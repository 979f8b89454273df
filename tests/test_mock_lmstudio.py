"""The mock LM Studio honours the LM Studio facts in DESIGN.md, its script and its faults."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.helpers import call, eventually, script
from tests.lmstudio_bodies import lmstudio_body
from tests.mock_lmstudio.fixture import MockLMStudio, mock_lmstudio, start_mock

QWEN = "qwen/qwen3-4b"
EMBED = "text-embedding-nomic-embed-text-v1.5"
MAGISTRAL = "mistralai/magistral-small-2509"
CODER = "qwen/qwen3-coder-30b"
TOOLS = [
    {"type": "function", "function": {"name": "fs__read_file", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "time__now", "parameters": {"type": "object"}}},
]


@pytest.fixture
def client(mock: MockLMStudio) -> httpx.AsyncClient:
    """Straight to the shared mock (reset for each test): this module tests the mock itself."""
    return mock.client


async def chat(client: httpx.AsyncClient, content: str, **extra: Any) -> httpx.Response:
    body = {"model": QWEN, "messages": [{"role": "user", "content": content}], **extra}
    return await client.post("/v1/chat/completions", json=body)


async def test_model_endpoints_have_lmstudio_shapes(client: httpx.AsyncClient) -> None:
    openai = (await client.get("/v1/models")).json()
    assert openai["object"] == "list"
    assert [m["id"] for m in openai["data"]][:2] == [EMBED, QWEN]
    assert all("created" not in m and m["object"] == "model" for m in openai["data"])

    v0 = {m["id"]: m for m in (await client.get("/api/v0/models")).json()["data"]}
    assert v0[EMBED]["type"] == "embeddings" and v0[EMBED]["capabilities"] == []
    assert v0[QWEN]["state"] == "loaded" and v0[QWEN]["capabilities"] == ["tool_use"]
    assert v0["mistralai/magistral-small-2509"]["state"] == "not-loaded"
    assert v0["google/gemma-3-4b"]["type"] == "vlm"
    assert v0["qwen/qwen3-coder-30b"]["max_context_length"] == 262144

    v1 = {m["key"]: m for m in (await client.get("/api/v1/models")).json()["models"]}
    assert v1[EMBED]["type"] == "embedding"
    assert v1[QWEN]["loaded_instances"][0]["id"] == QWEN
    assert v1[QWEN]["capabilities"] == {"vision": False, "trained_for_tool_use": True}
    assert v1["google/gemma-3-4b"]["type"] == "llm" and v1["google/gemma-3-4b"]["capabilities"]["vision"]
    assert v1["mistralai/magistral-small-2509"]["loaded_instances"] == []


async def test_unknown_endpoint_answers_200_with_error_string(client: httpx.AsyncClient) -> None:
    r = await client.delete("/v1/models")
    assert r.status_code == 200
    assert (r.status_code, r.json()) == lmstudio_body("unknown_endpoint", method="DELETE", path="/v1/models")
    async with asyncio.TaskGroup() as tg:
        v0 = tg.create_task(start_mock("--api", "v0"))
        oa = tg.create_task(start_mock("--api", "openai"))
    mock_v0, mock_openai = v0.result(), oa.result()
    try:
        async with httpx.AsyncClient(timeout=5) as c:
            assert (await c.get(f"{mock_v0.base_url}/api/v0/models")).json()["data"]
            r = await c.get(f"{mock_v0.base_url}/api/v1/models")
            assert (r.status_code, r.json()) == lmstudio_body("unknown_endpoint", method="GET", path="/api/v1/models")
            r = await c.post(f"{mock_v0.base_url}/api/v1/models/load", json={"model": QWEN})
            load = lmstudio_body("unknown_endpoint", method="POST", path="/api/v1/models/load")
            assert (r.status_code, r.json()) == load
            for path in ("/api/v0/models", "/api/v1/models"):
                r = await c.get(mock_openai.base_url + path)
                assert (r.status_code, r.json()) == lmstudio_body("unknown_endpoint", method="GET", path=path)
            assert len((await c.get(f"{mock_openai.base_url}/v1/models")).json()["data"]) == 5
    finally:
        await asyncio.gather(mock_v0.stop(), mock_openai.stop())


async def test_scripted_two_round_conversation(client: httpx.AsyncClient) -> None:
    calls = [[call("fs__read_file", {"path": "/tmp/a.txt"}), {"name": "time__now"}]]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "read it " + script(calls=calls)},
    ]
    r = await client.post("/v1/chat/completions", json={"model": QWEN, "messages": messages, "tools": TOOLS})
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion" and body["model"] == QWEN
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and not choice["message"]["content"]
    tool_calls = choice["message"]["tool_calls"]
    assert [c["id"] for c in tool_calls] == ["call_0_0", "call_0_1"]
    assert json.loads(tool_calls[0]["function"]["arguments"]) == {"path": "/tmp/a.txt"}
    assert tool_calls[1]["function"] == {"name": "time__now", "arguments": "{}"}
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]

    messages.append(choice["message"])
    messages += [
        {"role": "tool", "tool_call_id": "call_0_0", "content": "hello from a.txt"},
        {"role": "tool", "tool_call_id": "call_0_1", "content": "12:00"},
    ]
    r = await client.post("/v1/chat/completions", json={"model": QWEN, "messages": messages, "tools": TOOLS})
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    assert choice["message"]["content"] == "Based on the tools: hello from a.txt\n12:00"

    # without tools offered, no call is emitted; the default answer echoes the last user message
    r = await chat(client, "plain question " + script(calls=calls))
    assert r.json()["choices"][0]["message"]["content"] == "Mock answer to: plain question"
    r = await chat(client, script(answer="forty-two"))
    assert r.json()["choices"][0]["message"]["content"] == "forty-two"


async def test_forever_calls_tools_only_when_offered(client: httpx.AsyncClient) -> None:
    forever = script(forever=call("time__now", {}))
    messages: list[dict[str, Any]] = [{"role": "user", "content": forever}]
    for round_ in range(3):
        r = await client.post("/v1/chat/completions", json={"model": QWEN, "messages": messages, "tools": TOOLS})
        message = r.json()["choices"][0]["message"]
        assert message["tool_calls"][0]["id"] == f"call_{round_}_0"
        messages += [message, {"role": "tool", "tool_call_id": f"call_{round_}_0", "content": "t"}]
    r = await client.post("/v1/chat/completions", json={"model": QWEN, "messages": messages})
    assert r.json()["choices"][0]["message"]["content"] == "Based on the tools: t\nt\nt"


async def sse_data(response: httpx.Response) -> list[Any]:
    """The data of every event of an OpenAI-style stream (no `event:` lines), `[DONE]` as a string."""
    events = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def test_streaming_sends_tool_call_deltas_in_pieces(client: httpx.AsyncClient) -> None:
    args = {"path": "/tmp/some/long/file/name.txt"}
    body = {
        "model": QWEN,
        "messages": [{"role": "user", "content": script(calls=[[call("fs__read_file", args)]])}],
        "tools": TOOLS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = await sse_data(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    deltas = [d for c in chunks[1:-2] for d in c["choices"][0]["delta"]["tool_calls"]]
    assert deltas[0]["id"] == "call_0_0" and deltas[0]["function"]["name"] == "fs__read_file"
    assert all(d["index"] == 0 for d in deltas) and len(deltas) >= 3
    assert json.loads("".join(d["function"]["arguments"] for d in deltas)) == args

    body = {"model": QWEN, "messages": [{"role": "user", "content": "tell me a long story"}], "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        events = await sse_data(r)
    pieces = [c["choices"][0]["delta"].get("content") for c in events[1:-2]]
    assert len(pieces) >= 2 and "".join(pieces) == "Mock answer to: tell me a long story"
    assert events[-2]["choices"][0]["finish_reason"] == "stop" and events[-1] == "[DONE]"


async def test_model_errors(client: httpx.AsyncClient, mock: MockLMStudio) -> None:
    r = await client.post(
        "/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}
    )
    current = lmstudio_body("unknown_model", model="nope", examples=f"{EMBED}, {QWEN}, {MAGISTRAL}")
    assert (r.status_code, r.json()) == current  # 400
    await mock.configure(lmstudio="0.3")
    r = await client.post(
        "/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}
    )
    listing = "\n".join(m["id"] for m in (await client.get("/v1/models")).json()["data"])
    assert (r.status_code, r.json()) == lmstudio_body("unknown_model_0.3", model="nope", listing=listing)  # 404
    assert QWEN in listing.splitlines()
    r = await client.post("/v1/chat/completions", json={"model": EMBED, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and "is not a llm" in r.json()["error"]["message"]
    r = await client.post("/v1/embeddings", json={"model": QWEN, "input": "x"})
    assert r.status_code == 400 and "error" in r.json()


async def test_embeddings_and_completions(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/embeddings", json={"model": EMBED, "input": ["a", "b", "a"]})
    body = r.json()
    assert body["object"] == "list" and body["model"] == EMBED and body["usage"]["prompt_tokens"] > 0
    vectors = [d["embedding"] for d in body["data"]]
    assert [d["index"] for d in body["data"]] == [0, 1, 2] and all(len(v) == 8 for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    single = (await client.post("/v1/embeddings", json={"model": EMBED, "input": "a"})).json()
    assert single["data"][0]["embedding"] == vectors[0]

    r = await client.post("/v1/completions", json={"model": QWEN, "prompt": "Once upon"})
    body = r.json()
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "Mock completion of: Once upon"
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_load_unload_and_ttl(client: httpx.AsyncClient, mock: MockLMStudio) -> None:
    magistral = MAGISTRAL
    r = await client.post("/api/v1/models/load", json={"model": magistral, "ttl": 300})
    assert r.json() == {"type": "llm", "instance_id": magistral, "load_time_seconds": 0.1, "status": "loaded"}
    states = {m["id"]: m["state"] for m in (await client.get("/api/v0/models")).json()["data"]}
    assert states[magistral] == "loaded"
    assert (await client.post("/api/v1/models/unload", json={"instance_id": magistral})).json() == {
        "instance_id": magistral
    }
    states = {m["id"]: m["state"] for m in (await client.get("/api/v0/models")).json()["data"]}
    assert states[magistral] == "not-loaded"
    r = await client.post("/api/v1/models/load", json={"model": "nope"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_found"

    await chat(client, "hi", ttl=120)
    assert (await mock.requests())[-1]["body"]["ttl"] == 120


async def test_status_fault_with_retry_after(client: httpx.AsyncClient, mock: MockLMStudio) -> None:
    await mock.faults(
        {"kind": "status", "status": 503, "retry_after": 2, "path": "/v1/chat/completions"},
        {"kind": "status", "status": 429, "body": {"error": "busy"}},
    )
    r = await client.get("/v1/models")  # the first fault is for another path: the second one applies
    assert (r.status_code, r.json()) == (429, {"error": "busy"})
    r = await chat(client, "x")
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    assert r.json()["error"]["type"] == "server_error"
    assert (await chat(client, "x")).status_code == 200
    await mock.faults({"kind": "status", "status": 500})
    await mock.clear_faults()
    assert (await chat(client, "x")).status_code == 200


async def test_delay_and_hang_faults(client: httpx.AsyncClient, mock: MockLMStudio) -> None:
    await mock.faults({"kind": "delay", "ms": 300})
    r = await chat(client, "x")
    assert r.status_code == 200 and r.elapsed.total_seconds() >= 0.3

    await mock.faults({"kind": "hang"})
    body = {"model": QWEN, "messages": [{"role": "user", "content": "hang"}]}
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/v1/chat/completions", json=body, timeout=0.3)

    async def aborted() -> list[dict[str, Any]] | None:
        log = await mock.requests()
        return log if log[-1]["aborted"] else None

    log = await eventually(aborted, what="the hung request aborted")
    assert log[-1]["status"] is None and log[-1]["ended"] is not None
    assert log[0]["aborted"] is False and log[0]["status"] == 200 and log[0]["path"] == "/v1/chat/completions"


async def test_script_delay_and_inline_fault(client: httpx.AsyncClient) -> None:
    r = await chat(client, script(delay_ms=200, answer="late"))
    assert r.elapsed.total_seconds() >= 0.2 and r.json()["choices"][0]["message"]["content"] == "late"
    for _ in range(2):
        r = await chat(client, script(fault={"kind": "status", "status": 502}))
        assert r.status_code == 502


async def test_malformed_faults(client: httpx.AsyncClient, mock: MockLMStudio) -> None:
    await mock.faults({"kind": "malformed_json"})
    r = await chat(client, "x")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        r.json()

    await mock.faults({"kind": "malformed_tool_args"})
    r = await chat(client, "no script", tools=TOOLS)
    tool_call = r.json()["choices"][0]["message"]["tool_calls"][0]
    assert tool_call["function"] == {"name": "fs__read_file", "arguments": '{"path": '}
    # a script can send malformed arguments itself
    r = await chat(client, script(calls=[[call("time__now", "{oops")]]), tools=TOOLS)
    assert r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{oops"


async def test_cut_stream_fault(client: httpx.AsyncClient, mock: MockLMStudio) -> None:
    await mock.faults({"kind": "cut_stream"}, {"kind": "cut_stream"})
    body = {"model": QWEN, "messages": [{"role": "user", "content": "x"}], "stream": True}
    seen: list[Any] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                seen.append(line)
    assert any(line.startswith("data: {") for line in seen) and "data: [DONE]" not in seen
    with pytest.raises(httpx.RemoteProtocolError):
        await chat(client, "x")
    assert (await chat(client, "x")).status_code == 200


async def test_unknown_model_and_unload_faults(client: httpx.AsyncClient, mock: MockLMStudio) -> None:
    await mock.faults({"kind": "unknown_model"})
    r = await chat(client, "x")
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_found"

    await mock.faults({"kind": "unload"})
    r = await chat(client, "x")
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_found"
    states = {m["id"]: m["state"] for m in (await client.get("/api/v0/models")).json()["data"]}
    assert states[QWEN] == "not-loaded"
    await mock.reset()
    states = {m["id"]: m["state"] for m in (await client.get("/api/v0/models")).json()["data"]}
    assert states[QWEN] == "loaded"


async def test_pin_loaded_model_answers_with_the_loaded_model() -> None:
    async with mock_lmstudio("--pin-loaded-model") as pinned:
        r = await pinned.client.post(
            "/v1/chat/completions",
            json={"model": "qwen/qwen3-coder-30b", "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.status_code == 200 and r.json()["model"] == QWEN
        assert (await pinned.requests())[0]["body"]["model"] == "qwen/qwen3-coder-30b"


# --- current LM Studio: JIT loading, instances, versions, reasoning, headers ---------------------------


async def states(client: httpx.AsyncClient) -> dict[str, list[str]]:
    """Each model's loaded instance ids, from /api/v1/models."""
    models = (await client.get("/api/v1/models")).json()["models"]
    return {m["key"]: [i["id"] for i in m["loaded_instances"]] for m in models}


async def test_jit_loads_on_first_use_and_auto_evicts(client: httpx.AsyncClient, mock: MockLMStudio) -> None:
    await mock.configure(jit_load_ms=200)
    r = await client.post(
        "/v1/chat/completions", json={"model": MAGISTRAL, "messages": [{"role": "user", "content": "a"}]}
    )
    assert r.status_code == 200 and r.json()["model"] == MAGISTRAL and r.elapsed.total_seconds() >= 0.2
    assert (await states(client))[MAGISTRAL] == [MAGISTRAL]
    # the next JIT load evicts the model the previous one brought in, not the model loaded from the start
    r = await client.post("/v1/chat/completions", json={"model": CODER, "messages": [{"role": "user", "content": "b"}]})
    loaded = await states(client)
    assert r.status_code == 200 and loaded[CODER] == [CODER] and loaded[MAGISTRAL] == [] and loaded[QWEN] == [QWEN]
    await client.post("/v1/chat/completions", json={"model": CODER, "messages": [{"role": "user", "content": "c"}]})
    assert (await states(client))[CODER] == [CODER]  # loaded now: used as it is, not loaded again

    await mock.configure(auto_evict=False)
    await client.post("/v1/chat/completions", json={"model": MAGISTRAL, "messages": [{"role": "user", "content": "d"}]})
    loaded = await states(client)
    assert loaded[CODER] == [CODER] and loaded[MAGISTRAL] == [MAGISTRAL]


async def test_without_jit_nothing_loaded_is_a_plain_string_error(
    client: httpx.AsyncClient, mock: MockLMStudio
) -> None:
    await mock.configure(jit=False)
    ids = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
    assert ids == [EMBED, QWEN]  # only the loaded models
    r = await client.post("/v1/chat/completions", json={"model": CODER, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_found"
    await client.post("/api/v1/models/unload", json={"instance_id": QWEN})
    await client.post("/api/v1/models/unload", json={"instance_id": EMBED})
    for body in ({"model": CODER}, {}):
        r = await client.post("/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": "x"}]})
        assert (r.status_code, r.json()) == lmstudio_body("no_models_loaded")  # 400, a plain string
    assert (await states(client))[CODER] == []


async def test_instance_ids_can_differ_from_the_key(client: httpx.AsyncClient, mock: MockLMStudio) -> None:
    models = [
        {
            "id": QWEN,
            "type": "llm",
            "loaded": True,
            "max_context_length": 32768,
            "tool_use": True,
            "instance_id": f"{QWEN}:2",
        },
        {"id": CODER, "type": "llm", "loaded": False, "max_context_length": 262144, "tool_use": True},
    ]
    await mock.configure(models=models)
    assert (await states(client)) == {QWEN: [f"{QWEN}:2"], CODER: []}
    # unload takes the instance id: the key is not found
    r = await client.post("/api/v1/models/unload", json={"instance_id": QWEN})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = await client.post("/api/v1/models/unload", json={"model": QWEN})
    assert r.status_code == 404
    # a second load of a loaded model is a second instance
    r = await client.post("/api/v1/models/load", json={"model": QWEN})
    assert r.json()["instance_id"] == f"{QWEN}:3"
    assert (await states(client))[QWEN] == [f"{QWEN}:2", f"{QWEN}:3"]
    assert (await client.post("/api/v1/models/unload", json={"instance_id": f"{QWEN}:2"})).json() == {
        "instance_id": f"{QWEN}:2"
    }
    assert (await states(client))[QWEN] == [f"{QWEN}:3"]
    await mock.reset()
    assert (await states(client))[QWEN] == [QWEN]


async def test_older_version_shapes() -> None:
    async with mock_lmstudio(lmstudio="0.3") as old:
        r = await old.client.post("/api/v1/models/load", json={"model": CODER})
        assert r.json() == {"type": "llm", "model_instance_id": CODER, "load_time_seconds": 0.1, "status": "loaded"}
        r = await old.client.post(
            "/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": "x"}]}
        )
        assert r.status_code == 404 and "Your models:\n" in r.json()["error"]["message"]
        assert (await old.client.get("/_mock/config")).json()["lmstudio"] == "0.3"


async def test_reasoning_and_text_beside_tool_calls(client: httpx.AsyncClient, mock: MockLMStudio) -> None:
    spec = script(
        reasoning="Let me think.", say="I will read the file.", calls=[[call("fs__read_file", {"path": "a"})]]
    )
    r = await chat(client, spec, tools=TOOLS)
    message = r.json()["choices"][0]["message"]
    assert message["content"] == "<think>Let me think.</think>\nI will read the file."  # separation off: inline
    assert "reasoning_content" not in message and message["tool_calls"][0]["function"]["name"] == "fs__read_file"

    await mock.configure(separate_reasoning=True)
    r = await chat(client, spec, tools=TOOLS)
    message = r.json()["choices"][0]["message"]
    assert message["reasoning_content"] == "Let me think." and message["content"] == "I will read the file."
    assert r.json()["choices"][0]["finish_reason"] == "tool_calls" and len(message["tool_calls"]) == 1

    body = {"model": QWEN, "messages": [{"role": "user", "content": spec}], "tools": TOOLS, "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body) as streamed:
        events = await sse_data(streamed)
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Let me think."
    assert "".join(d.get("content") or "" for d in deltas) == "I will read the file."
    first_content = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert all("reasoning_content" not in d for d in deltas[first_content:])
    assert any("tool_calls" in d for d in deltas)


async def test_request_log_has_headers(client: httpx.AsyncClient, mock: MockLMStudio) -> None:
    await client.get("/v1/models", headers={"Authorization": "Bearer t0k3n", "X-Extra": "1"})
    [entry] = await mock.requests()
    assert entry["headers"]["authorization"] == "Bearer t0k3n" and entry["headers"]["x-extra"] == "1"


async def test_bad_config_is_refused(mock: MockLMStudio) -> None:
    r = await mock.client.post("/_mock/config", json={"nope": 1})
    assert r.status_code == 400 and "nope" in r.json()["error"]["message"]
    r = await mock.client.post("/_mock/config", json={"lmstudio": "9.9"})
    assert r.status_code == 400


# --- the context window (issue 28) -------------------------------------------------------------------------


def windowed(**extra: Any) -> list[dict[str, Any]]:
    """QWEN loaded with a window (and the embedding model), in the `--models` format."""
    qwen = {"id": QWEN, "type": "llm", "loaded": True, "max_context_length": 32768, "tool_use": True, **extra}
    return [{"id": EMBED, "type": "embeddings", "loaded": False, "max_context_length": 2048, "tool_use": False}, qwen]


def tokens_of(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
    """The mock's rule, restated: ceil(chars / 4) of the JSON of the messages plus the tools."""
    chars = len(json.dumps(messages)) + (len(json.dumps(tools)) if tools else 0)
    return -(-chars // 4)


async def test_listings_report_the_loaded_context_as_each_api_does(
    client: httpx.AsyncClient, mock: MockLMStudio
) -> None:
    await mock.configure(models=windowed(context_length=2048, listed_context=8192))
    v1 = {m["key"]: m for m in (await client.get("/api/v1/models")).json()["models"]}
    assert [i["config"]["context_length"] for i in v1[QWEN]["loaded_instances"]] == [8192]
    v0 = {m["id"]: m for m in (await client.get("/api/v0/models")).json()["data"]}
    assert v0[QWEN]["loaded_context_length"] == 8192 and "loaded_context_length" not in v0[EMBED]
    await mock.configure(models=windowed())
    v1 = {m["key"]: m for m in (await client.get("/api/v1/models")).json()["models"]}
    assert v1[QWEN]["loaded_instances"][0]["config"]["context_length"] == 4096  # LM Studio's default


async def test_llamacpp_mode_lists_meta_and_props() -> None:
    async with mock_lmstudio("--api", "llamacpp") as mock:
        await mock.configure(models=windowed(context_length=2048)[1:])  # one model: llama-server's single mode
        [entry] = (await mock.client.get("/v1/models")).json()["data"]
        props = (await mock.client.get("/props")).json()
        missing = await mock.client.get("/api/v1/models")
    assert entry["owned_by"] == "llamacpp" and entry["meta"]["n_ctx"] == 2048 and entry["meta"]["n_ctx_train"] == 32768
    assert "status" not in entry
    assert props["default_generation_settings"]["n_ctx"] == 2048
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


async def test_usage_counts_the_prompt_by_the_stated_rule(client: httpx.AsyncClient) -> None:
    messages = [{"role": "user", "content": "count me, please é"}]
    body = (
        await client.post("/v1/chat/completions", json={"model": QWEN, "messages": messages, "tools": TOOLS})
    ).json()
    assert body["usage"]["prompt_tokens"] == tokens_of(messages, TOOLS)


@pytest.mark.parametrize(
    ("shape", "status"), [("n_keep_400", 400), ("n_keep_200", 200), ("empty_200", 200), ("llama_400", 400)]
)
async def test_a_prompt_that_fills_the_window_gets_the_models_overflow_shape(
    client: httpx.AsyncClient, mock: MockLMStudio, shape: str, status: int
) -> None:
    await mock.configure(models=windowed(context_length=100, overflow=shape))
    fits = [{"role": "user", "content": "x" * 200}]
    assert (await client.post("/v1/chat/completions", json={"model": QWEN, "messages": fits})).status_code == 200
    messages = [{"role": "user", "content": "x" * 400}]
    n_prompt = tokens_of(messages)
    response = await client.post("/v1/chat/completions", json={"model": QWEN, "messages": messages})
    assert response.status_code == status
    body = response.json()
    if shape == "empty_200":
        assert body["choices"][0]["message"]["content"] == ""
        assert body["usage"] == {"prompt_tokens": n_prompt, "completion_tokens": 0, "total_tokens": n_prompt}
    elif shape == "llama_400":
        assert body["error"]["type"] == "exceed_context_size_error"
        assert (body["error"]["n_prompt_tokens"], body["error"]["n_ctx"]) == (n_prompt, 100)
        assert (
            f"request ({n_prompt} tokens) exceeds the available context size (100 tokens)" in body["error"]["message"]
        )
    else:
        assert f"(n_keep: {n_prompt}>= n_ctx: 100)" in body["error"]


async def test_an_empty_200_streams_no_content(client: httpx.AsyncClient, mock: MockLMStudio) -> None:
    await mock.configure(models=windowed(context_length=10, overflow="empty_200"))
    body = {"model": QWEN, "messages": [{"role": "user", "content": "x" * 100}], "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        text = (await response.aread()).decode()
    assert response.status_code == 200 and '"content"' not in text and text.endswith("data: [DONE]\n\n")


async def test_an_answer_is_cut_where_the_window_ends(client: httpx.AsyncClient, mock: MockLMStudio) -> None:
    messages = [{"role": "user", "content": script(answer="y" * 400)}]  # about 100 tokens of answer
    await mock.configure(models=windowed(context_length=tokens_of(messages) + 10))
    body = (await client.post("/v1/chat/completions", json={"model": QWEN, "messages": messages})).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 10
