"""What a careless client, an attacker or a broken model can send, kept as regression tests:
none of it may break another client's session, blow up /metrics, or answer 500."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import string
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from app.gateway import load_keys
from app.header_timeout import header_timeout_protocol
from app.main import create_app
from app.settings import Settings
from services.lmstudio import LMStudioClient, RetryPolicy
from services.metrics import Metrics
from tests.conftest import make_settings, served
from tests.helpers import call, eventually, mcp_http_session, read_sse, script
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.processes import free_port
from tests.scenarios.conftest import gateway_process

SURROGATE = "\udc00"
ECHO = "/v1/mcp/servers/fault/tools/echo"
CHAT, QWEN = "/v1/chat/completions", "qwen/qwen3-4b"


def raw_json(body: Any) -> dict[str, Any]:
    """A body sent as ASCII-escaped JSON, the way a client can send a lone surrogate ("\\udc00")."""
    return {"content": json.dumps(body).encode(), "headers": {"Content-Type": "application/json"}}


async def fault_pid(bridge: httpx.AsyncClient) -> int:
    return int((await bridge.post("/v1/mcp/servers/fault/tools/pid", json={})).json()["content"][0]["text"])


# --- 1. lone surrogates never reach a shared MCP session ------------------------------------------


async def test_a_surrogate_argument_is_422_naming_the_field(bridge: httpx.AsyncClient) -> None:
    assert (await bridge.post(ECHO, json={"text": "warm"})).status_code == 200
    response = await bridge.post(ECHO, **raw_json({"text": "bad " + SURROGATE}))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error" and response.json()["field"] == "text"
    again = await bridge.post(ECHO, json={"text": "still here"})
    assert again.status_code == 200 and again.json()["content"][0]["text"] == "still here"


async def test_poison_beside_normal_traffic_breaks_nothing(bridge: httpx.AsyncClient) -> None:
    pid = await fault_pid(bridge)
    stop = asyncio.Event()
    poison_answers: list[int] = []

    async def poison() -> None:
        while not stop.is_set():
            bad = {"text": random.choice([SURROGATE, "\ud800x", "a\udfff" * 3])}
            poison_answers.append((await bridge.post(ECHO, **raw_json(bad))).status_code)
            await asyncio.sleep(0)  # a refused call never suspends in-process: yield, so the normal calls run

    async def normal(i: int) -> int:
        response = await bridge.post(ECHO, json={"text": f"call {i}"})
        return response.status_code if response.json()["content"][0]["text"] == f"call {i}" else -1

    poisoner = asyncio.ensure_future(poison())
    try:
        codes = [await normal(i) for i in range(150)]
    finally:
        stop.set()
        await poisoner
    assert codes == [200] * 150
    assert poison_answers and set(poison_answers) == {422}
    after = {s["name"]: s for s in (await bridge.get("/v1/mcp/servers")).json()["data"]}["fault"]
    assert after["status"] == "ready" and after["last_error"] is None and after["breaker"] == "closed"
    assert await fault_pid(bridge) == pid  # the same process: the session was never restarted


SURROGATE_RUN = "Echo " + script(calls=[[call("fault__echo", {"text": "x" + SURROGATE})]], answer="done")


async def test_a_run_whose_model_writes_a_surrogate_answers_200(bridge: httpx.AsyncClient) -> None:
    body = {"task": SURROGATE_RUN, "mcp_servers": ["fault"]}
    response = await bridge.post("/v1/autonomous", json=body)
    assert response.status_code == 200, response.text
    step = response.json()["steps"][0]
    assert step["is_error"] and "not valid Unicode" in step["output"]
    assert response.json()["status"] == "completed"


async def test_the_surrogate_run_streams_to_the_end(live: httpx.AsyncClient) -> None:
    body = {"task": SURROGATE_RUN, "mcp_servers": ["fault"], "stream": True}
    async with live.stream("POST", "/v1/autonomous", json=body) as response:
        events = await read_sse(response)
    assert events[-1][0] == "run.completed"
    assert events[-1][1]["steps"][0]["is_error"]


async def test_the_surrogate_run_through_chat_completions(bridge: httpx.AsyncClient) -> None:
    body = {"messages": [{"role": "user", "content": SURROGATE_RUN}], "mcp_servers": ["fault"]}
    response = await bridge.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["bridge_run"]["steps"][0]["is_error"]


async def test_a_surrogate_in_the_task_is_422_naming_it(bridge: httpx.AsyncClient) -> None:
    body = {"task": "say " + SURROGATE + " " + script(answer="ok"), "mcp_servers": []}
    response = await bridge.post("/v1/autonomous", **raw_json(body))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "task"]


# --- 3. metric labels stay bounded -----------------------------------------------------------------


async def test_unknown_tool_names_do_not_grow_metrics(bridge: httpx.AsyncClient) -> None:
    rng = random.Random(7)

    async def unknown_names(count: int) -> None:
        for _ in range(count):
            name = "".join(rng.choices(string.ascii_letters + string.digits + "_-", k=rng.randint(1, 200)))
            response = await bridge.post(f"/v1/mcp/servers/fault/tools/{name}", json={})
            assert response.status_code == 404

    await unknown_names(5)  # the one "(unknown)" series and the route's 404 series exist from here on
    await bridge.get("/metrics")  # and the scrape's own series
    before = (await bridge.get("/metrics")).text
    await unknown_names(1000)
    after = (await bridge.get("/metrics")).text
    assert abs(len(after.splitlines()) - len(before.splitlines())) <= 2
    assert abs(len(after) - len(before)) < 500


# --- 4. one body parser: the same limits and answers on every JSON route ---------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/autonomous", "/v1/completions", "/v1/embeddings"])
@pytest.mark.parametrize(
    "body", [b"[" * 10_000 + b"]" * 10_000, b'{"task": ', b"\xff\xfe"], ids=["deep", "cut", "bytes"]
)
async def test_unparseable_bodies_are_400_invalid_json(bridge: httpx.AsyncClient, path: str, body: bytes) -> None:
    response = await bridge.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_json"


# --- 5. upstream failures told apart truthfully ---------------------------------------------------

ANSWERS = {
    "dropped": b"",
    "dropped-mid-headers": b"HTTP/1.1 200 OK\r\nContent-Ty",
    "cut-body": b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"choices":',
    "garbage": b"HELLO THERE\r\n\r\n",
    "not-json": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{{{{{",
}


@pytest.fixture
async def broken_upstream(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    kind = request.param
    if kind == "refused":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        yield f"http://127.0.0.1:{port}"
        return

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(ANSWERS[kind])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()


@pytest.mark.parametrize(
    ("broken_upstream", "status", "code", "words"),
    [
        ("refused", 503, "upstream_unavailable", "refused"),
        ("dropped", 502, "upstream_error", "closed the connection"),
        ("dropped-mid-headers", 502, "upstream_error", "closed the connection"),
        ("cut-body", 502, "upstream_error", "cut short"),
        ("garbage", 502, "upstream_error", "not HTTP"),
        ("not-json", 502, "upstream_error", "not JSON"),
    ],
    indirect=["broken_upstream"],
)
async def test_upstream_failures_are_classified(broken_upstream: str, status: int, code: str, words: str) -> None:
    client = LMStudioClient.create(
        broken_upstream,
        token=None,
        connect_timeout_s=2,
        read_timeout_s=2,
        max_connections=2,
        retry=RetryPolicy(0, 0.01, 0.01),
        breaker=None,
        metrics=Metrics(),
    )
    try:
        with pytest.raises(Exception) as info:
            await client.chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, deadline=None)
    finally:
        await client.aclose()
    err: Any = info.value
    assert (err.status, err.code) == (status, code) and words in err.detail, err.detail
    assert "ConnectTimeout" not in err.detail


# --- 6. slow headers --------------------------------------------------------------------------------


async def test_slow_header_connections_are_closed_and_healthz_stays_fast(settings: Settings) -> None:
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", http=header_timeout_protocol(1.0)
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    await eventually(lambda: bool(server.started), 30, "uvicorn started")
    slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(50):
            slow.append(await asyncio.open_connection("127.0.0.1", port))
        started = time.monotonic()
        for _, writer in slow:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).status_code == 200

            async def dribble_until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
                while not reader.at_eof():
                    writer.write(b"X")
                    try:
                        await writer.drain()
                        await asyncio.wait_for(reader.read(1024), 0.2)
                    except (TimeoutError, ConnectionError):
                        if writer.is_closing() or reader.at_eof():
                            break
                return time.monotonic() - started

            closed_after = await asyncio.wait_for(asyncio.gather(*(dribble_until_closed(r, w) for r, w in slow)), 15)
            assert max(closed_after) < 5.0
            assert (await client.get("/healthz")).status_code == 200
    finally:
        for _, writer in slow:
            writer.close()
        server.should_exit = True
        await task


# --- 7. no redirect built from the client's Host ---------------------------------------------------


async def test_a_trailing_slash_is_404_without_a_location(bridge: httpx.AsyncClient) -> None:
    response = await bridge.get("/v1/models/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert response.status_code == 404 and "location" not in response.headers
    assert response.json()["code"] == "not_found"


# --- 8. no secret in an answer (issue 29, item 3) ---------------------------------------------------

TOKEN = "lms-token-0123456789abcdef"


@pytest.mark.parametrize("where", ["setting", "hosts-file"])
async def test_an_upstream_echoing_the_token_never_shows_it(
    mock: MockLMStudio, mcp_json: Path, tmp_path: Path, where: str
) -> None:
    """An auth proxy in front of LM Studio answers 401 `Invalid API token '<token>'`: the token (LMSTUDIO_API_TOKEN
    or a hosts file's) is in no problem document, SSE event, chat error, stored record or front-door answer."""
    if where == "setting":
        tokens: dict[str, Any] = {"lmstudio_api_token": TOKEN, "lmstudio_base_url": mock.base_url}
    else:
        hosts = tmp_path / "hosts.yaml"
        hosts.write_text(json.dumps({"hosts": [{"name": "one", "url": mock.base_url, "token": TOKEN}]}))
        tokens = {"lmstudio_hosts_file": str(hosts)}
    echo = {"kind": "status", "status": 401, "body": {"error": f"Invalid API token '{TOKEN}'"}}
    await mock.faults(*({**echo, "path": CHAT} for _ in range(5)))
    task = "hi " + script(answer="never")
    seen: list[str] = []
    async with served(make_settings(mcp_config=str(mcp_json), **tokens), timeout=60) as gateway:
        run = await gateway.post("/v1/autonomous", json={"task": task, "mcp_servers": ["time"]})
        seen.append(run.text)
        assert run.status_code >= 400 and "Invalid API token" in run.json()["detail"], run.text
        chat = await gateway.post(CHAT, json={"model": QWEN, "messages": [{"role": "user", "content": "hi"}]})
        seen.append(chat.text)
        assert chat.status_code >= 400 and "error" in chat.json(), chat.text
        streamed = await gateway.post("/v1/autonomous", json={"task": task, "mcp_servers": ["time"], "stream": True})
        seen.append(streamed.text)
        assert "run.failed" in streamed.text, streamed.text
        started = await gateway.post("/v1/runs", json={"task": task, "mcp_servers": ["time"]})
        run_id = started.json()["run_id"]

        async def ended() -> dict[str, Any] | None:
            body = dict((await gateway.get(f"/v1/runs/{run_id}")).json())
            return body if body["status"] == "failed" else None

        seen.append(json.dumps(await eventually(ended, 20, "the background run failed")))
        async with gateway.stream("GET", f"/v1/runs/{run_id}/events") as events:
            seen.append("".join([line async for line in events.aiter_lines()]))
        assert "Invalid API token" in seen[-1], seen[-1]
        async with mcp_http_session(gateway) as session:
            tool = await session.call_tool("autonomous_with_mcp", {"mcp_name": "time", "task": task})
        seen.append(tool.model_dump_json())
        assert tool.is_error, tool
    for text in seen:
        assert TOKEN not in text and json.dumps(TOKEN)[1:-1] not in text, text
        assert "[REDACTED]" in text, text


@pytest.mark.parametrize("where", ["setting", "hosts-file"])
async def test_an_upstream_echoing_the_token_is_not_in_the_log(
    mock: MockLMStudio, mcp_json: Path, tmp_path: Path, where: str
) -> None:
    """The same 401 against a real `serve` process at INFO: its log (what operators ship) never has the token,
    and does say what happened."""
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(json.dumps({"hosts": [{"name": "one", "url": mock.base_url, "token": TOKEN}]}))
    upstream = (
        {"LMSTUDIO_API_TOKEN": TOKEN, "LMSTUDIO_BASE_URL": mock.base_url}
        if where == "setting"
        else {"LMSTUDIO_HOSTS_FILE": str(hosts)}
    )
    echo = {"kind": "status", "status": 401, "body": {"error": f"Invalid API token '{TOKEN}'"}}
    await mock.faults(*({**echo, "path": CHAT} for _ in range(2)))  # one per request below (a 401 is not retried)
    task = "hi " + script(answer="never")
    env = {**upstream, "MCP_CONFIG": str(mcp_json), "BRIDGE_LOG_LEVEL": "INFO"}
    env["BRIDGE_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}"
    async with gateway_process(env) as gw:
        run = await gw.client.post("/v1/autonomous", json={"task": task, "mcp_servers": ["time"]})
        assert run.status_code >= 400 and "[REDACTED]" in run.json()["detail"], run.text
        chat = await gw.client.post(CHAT, json={"model": QWEN, "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code >= 400, chat.text
        assert await gw.sigterm() == 0
        log = await asyncio.to_thread(Path(gw.log_path).read_text)
    assert "Invalid API token" in log and "[REDACTED]" in log, log[-3000:]
    assert TOKEN not in log and json.dumps(TOKEN)[1:-1] not in log


# --- 9. bounded event ids and list pages (issue 29, item 6) -----------------------------------------


async def test_a_huge_last_event_id_is_422_like_after(bridge: httpx.AsyncClient) -> None:
    started = await bridge.post("/v1/runs", json={"task": "hi " + script(answer="ok"), "mcp_servers": ["time"]})
    run_id = started.json()["run_id"]
    for value in ("9" * 5000, "1" * 4301, "9" * 20):
        response = await bridge.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": value})
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "validation_error" and response.json()["field"] == "Last-Event-ID"
    assert (await bridge.get(f"/v1/runs/{run_id}/events", params={"after": "9" * 5000})).status_code == 422


async def test_list_pages_carry_a_preview_of_big_tasks_and_messages(bridge: httpx.AsyncClient) -> None:
    task = "x" * 19_000 + " " + script(answer="ok")  # tasks are at most 20,000 characters
    started = await bridge.post("/v1/runs", json={"task": task, "mcp_servers": ["time"]})
    assert started.status_code == 202, started.text
    message = "y" * 2_000 + " " + script(answer="ok")  # within the mock model's context window
    chat = {"model": QWEN, "messages": [{"role": "user", "content": message}], "mcp_servers": ["time"]}
    answered = await bridge.post(CHAT, json=chat)
    assert answered.status_code == 200, answered.text
    page = await bridge.get("/v1/runs", params={"limit": 200})
    assert page.status_code == 200 and len(page.content) < 100_000, len(page.content)
    listed = page.json()["data"]
    for item in listed:
        assert len(item["task"]) <= 200, item["task"]
        for message in item["options"].get("messages", []):
            assert len(message["content"]) <= 200
    [by_task] = [r for r in listed if r["run_id"] == started.json()["run_id"]]
    assert by_task["task"].endswith("…") and by_task["task"].startswith("xxx")
    assert any(m["content"].endswith("…") for r in listed for m in r["options"].get("messages", []))
    full = await bridge.get(f"/v1/runs/{started.json()['run_id']}")
    assert full.json()["task"] == task  # the whole record by id


# --- 10. duplicate keys, concurrent deletes (issue 29, item 7) --------------------------------------


def test_a_bridge_api_keys_key_repeated_in_the_keys_file_stops_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "shared-key-0000000000000001"
    keys = tmp_path / "keys.yaml"
    keys.write_text(json.dumps({"keys": [{"name": "narrow", "key": key, "servers": ["time"]}]}))
    with pytest.raises(SystemExit) as stopped:  # what `serve` and `check` do at start-up
        load_keys(make_settings(api_keys=[key], keys_file=str(keys)))
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "'narrow'" in err and "BRIDGE_API_KEYS" in err and key not in err, err
    # the same key twice in the file is refused too (as docs/security.md says)
    keys.write_text(json.dumps({"keys": [{"name": "a", "key": key}, {"name": "b", "key": key}]}))
    with pytest.raises(SystemExit):
        load_keys(make_settings(keys_file=str(keys)))
    assert "the same key as another entry" in capsys.readouterr().err


async def test_twenty_concurrent_deletes_of_one_run_one_204(bridge: httpx.AsyncClient, mock: MockLMStudio) -> None:
    # (`mock`: reset, so what an earlier test configured on the shared mock does not end this run otherwise)
    started = await bridge.post("/v1/runs", json={"task": "hi " + script(answer="ok"), "mcp_servers": ["time"]})
    run_id = started.json()["run_id"]

    async def ended() -> bool:
        return bool((await bridge.get(f"/v1/runs/{run_id}")).json()["status"] == "completed")

    await eventually(ended, 20, "the run completed")
    answers = await asyncio.gather(*(bridge.delete(f"/v1/runs/{run_id}") for _ in range(20)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [204] + [404] * 19, statuses
    assert all(a.json()["code"] == "run_not_found" for a in answers if a.status_code == 404)
