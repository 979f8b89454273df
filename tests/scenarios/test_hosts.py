"""Several LM Studio hosts behind one gateway: three mock LM Studio processes holding different models.
Where each call lands is read from the hosts' own request logs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import app_client, make_settings
from tests.helpers import REPO, TIME_CALL, eventually, script
from tests.mock_lmstudio.fixture import MockLMStudio, start_mock
from tests.processes import free_port

QWEN, MISTRAL, GEMMA = "qwen/qwen3-4b", "mistralai/magistral-small-2509", "google/gemma-3-4b"
EMBED = "text-embedding-nomic-embed-text-v1.5"


def model(id_: str, loaded: bool, kind: str = "llm") -> dict[str, Any]:
    return {"id": id_, "type": kind, "loaded": loaded, "max_context_length": 8192, "tool_use": True}


# a: qwen loaded (and the embedding model); b: mistral loaded, qwen downloaded; c: gemma loaded
LAYOUT = {
    "a": [model(EMBED, True, "embeddings"), model(QWEN, True)],
    "b": [model(MISTRAL, True), model(QWEN, False)],
    "c": [model(GEMMA, True, "vlm")],
}


@pytest.fixture(scope="module")
async def hosts() -> AsyncIterator[dict[str, MockLMStudio]]:
    started = await asyncio.gather(*(start_mock() for _ in LAYOUT))
    mocks = dict(zip(LAYOUT, started, strict=True))
    try:
        yield mocks
    finally:
        await asyncio.gather(*(m.stop() for m in mocks.values()))


@pytest.fixture
async def fresh(hosts: dict[str, MockLMStudio]) -> dict[str, MockLMStudio]:
    for name, mock in hosts.items():
        await mock.reset()
        await mock.configure(models=LAYOUT[name])
    return hosts


def hosts_file(tmp_path: Path, mocks: Mapping[str, MockLMStudio | str], **weights: float) -> Path:
    """A hosts file naming each mock (or a bare URL) with its weight (default 1)."""
    urls = {n: m if isinstance(m, str) else m.base_url for n, m in mocks.items()}
    entries = [{"name": n, "url": url, "weight": weights.get(n, 1)} for n, url in urls.items()]
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps({"hosts": entries}))
    return path


async def test_each_call_lands_on_a_host_with_its_model_loaded(fresh: dict[str, MockLMStudio], tmp_path: Path) -> None:
    settings = make_settings(lmstudio_hosts_file=str(hosts_file(tmp_path, fresh)))
    async with app_client(settings, timeout=30) as client:
        for wanted in (QWEN, MISTRAL, GEMMA):
            answer = await client.post("/v1/autonomous", json={"task": "hi", "model": wanted, "mcp_servers": []})
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "completed"
        passthrough = await client.post(
            "/v1/chat/completions", json={"model": MISTRAL, "messages": [{"role": "user", "content": "x"}]}
        )
        assert passthrough.status_code == 200, passthrough.text
        embedded = await client.post("/v1/embeddings", json={"model": EMBED, "input": "x"})
        assert embedded.status_code == 200, embedded.text
    a, b, c = [await fresh[n].chat_requests() for n in "abc"]
    assert [r["body"]["model"] for r in a] == [QWEN]  # b has qwen too, but not loaded: a first
    assert [r["body"]["model"] for r in b] == [MISTRAL, MISTRAL]
    assert [r["body"]["model"] for r in c] == [GEMMA]
    assert [r["path"] for r in await fresh["a"].requests() if r["path"] == "/v1/embeddings"] == ["/v1/embeddings"]


async def test_a_model_only_downloaded_somewhere_is_loaded_there(
    fresh: dict[str, MockLMStudio], tmp_path: Path
) -> None:
    # qwen: loaded on nothing but downloaded on b once a forgets it
    await fresh["a"].configure(models=[model(EMBED, True, "embeddings")])
    settings = make_settings(lmstudio_hosts_file=str(hosts_file(tmp_path, fresh)))
    async with app_client(settings, timeout=30) as client:
        answer = await client.post("/v1/autonomous", json={"task": "hi", "model": QWEN, "mcp_servers": []})
        assert answer.status_code == 200, answer.text
    assert [r["body"]["model"] for r in await fresh["b"].chat_requests()] == [QWEN]
    assert await fresh["a"].chat_requests() == []


async def test_two_hosts_with_the_model_share_the_load_by_in_flight_calls(
    fresh: dict[str, MockLMStudio], tmp_path: Path
) -> None:
    await fresh["b"].configure(models=[model(QWEN, True)])
    settings = make_settings(lmstudio_hosts_file=str(hosts_file(tmp_path, fresh)))
    slow = script(hold="share")  # every call stays in flight until all six are
    async with app_client(settings, timeout=30) as client:
        await client.get("/v1/models")
        calls = asyncio.gather(
            *(client.post("/v1/autonomous", json={"task": slow, "model": QWEN, "mcp_servers": []}) for _ in range(6))
        )

        async def all_in_flight() -> bool:
            return await fresh["a"].held("share") + await fresh["b"].held("share") == 6

        await eventually(all_in_flight, 20, "six calls held by the two hosts")
        await asyncio.gather(fresh["a"].release("share"), fresh["b"].release("share"))
        answers = await calls
        assert [a.status_code for a in answers] == [200] * 6
        states = (await client.get("/metrics")).text
    # six at once: each new call goes to the host with fewer calls in flight, so three and three
    assert (len(await fresh["a"].chat_requests()), len(await fresh["b"].chat_requests())) == (3, 3)
    assert 'bridge_lmstudio_request_duration_seconds_count{host="a",operation="chat",outcome="ok"} 3.0' in states


async def test_weights_spread_sequential_calls(fresh: dict[str, MockLMStudio], tmp_path: Path) -> None:
    await fresh["b"].configure(models=[model(QWEN, True)])
    settings = make_settings(lmstudio_hosts_file=str(hosts_file(tmp_path, fresh, a=3, b=1)))
    async with app_client(settings, timeout=30) as client:
        for _ in range(8):
            answer = await client.post("/v1/autonomous", json={"task": "hi", "model": QWEN, "mcp_servers": []})
            assert answer.status_code == 200
    assert (len(await fresh["a"].chat_requests()), len(await fresh["b"].chat_requests())) == (6, 2)


async def test_a_host_killed_mid_run_the_run_completes_on_another(tmp_path: Path, mcp_json: Path) -> None:
    a, b = await asyncio.gather(start_mock(), start_mock())
    try:
        for mock in (a, b):
            await mock.configure(models=[model(QWEN, True)])
        settings = make_settings(
            lmstudio_hosts_file=str(hosts_file(tmp_path, {"a": a, "b": b})),
            mcp_config=str(mcp_json),
            breaker_failures=1,  # one failed call (its retries spent) opens that host's breaker
        )
        task = script(calls=[[TIME_CALL]], hold="mid-run")
        await b.release("mid-run")  # b answers at once; a holds its answer until killed
        async with app_client(settings, timeout=60) as client:
            await client.get("/v1/models")
            started = asyncio.ensure_future(
                client.post("/v1/autonomous", json={"task": task, "model": QWEN, "mcp_servers": ["time"]})
            )
            await a.until_held("mid-run")  # round 1 is on a
            a.process.kill()  # gone mid-answer
            answer = await started
            assert answer.status_code == 200, answer.text
            result = answer.json()
            ready = (await client.get("/readyz")).json()
            metrics = (await client.get("/metrics")).text
            later = await client.post("/v1/autonomous", json={"task": "hi", "model": QWEN, "mcp_servers": []})
        assert result["status"] == "completed"
        assert [s["tool"] for s in result["steps"]] == ["get_current_time"]
        assert any("LM Studio host 'a' failed" in w and "went to host 'b'" in w for w in result["warnings"])
        assert ready["status"] == "ready"
        by_name = {h["name"]: h for h in ready["lmstudio"]["hosts"]}
        assert by_name["a"]["ok"] is False and by_name["a"]["code"] == "upstream_unavailable"
        assert by_name["b"]["ok"] is True
        # each host has its own breaker: a's is open, b's is not, and the next run goes to b without a word
        assert (by_name["a"]["breaker"], by_name["b"]["breaker"]) == ("open", "closed")
        assert 'bridge_breaker_state{upstream="lmstudio:a"} 2.0' in metrics
        assert 'bridge_breaker_state{upstream="lmstudio:b"} 0.0' in metrics
        assert later.status_code == 200 and later.json()["warnings"] == []
        assert len(await b.chat_requests()) == 3  # round 1 again, its final answer, the later run
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def test_all_hosts_down_is_503_naming_them(tmp_path: Path) -> None:
    mocks = dict(zip("ab", await asyncio.gather(start_mock(), start_mock()), strict=True))
    settings = make_settings(lmstudio_hosts_file=str(hosts_file(tmp_path, mocks)))
    try:
        async with app_client(settings, timeout=30) as client:
            assert (await client.get("/v1/models")).status_code == 200  # the list is cached
            for mock in mocks.values():
                mock.process.kill()
                await mock.process.wait()
            answer = await client.post("/v1/autonomous", json={"task": "hi", "model": QWEN, "mcp_servers": []})
            ready = await client.get("/readyz")
    finally:
        await asyncio.gather(*(m.stop() for m in mocks.values()))
    assert answer.status_code == 503, answer.text
    problem = answer.json()
    assert problem["code"] == "upstream_unavailable"
    assert problem["hosts"] == ["a", "b"]
    assert "hosts tried: a (" in problem["detail"] and "; b (" in problem["detail"]
    assert int(answer.headers["retry-after"]) >= 1
    assert ready.status_code == 503
    assert [h["ok"] for h in ready.json()["lmstudio"]["hosts"]] == [False, False]


async def test_no_host_answers_the_model_list(tmp_path: Path) -> None:
    urls = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    async with app_client(make_settings(lmstudio_base_urls=urls), timeout=30) as client:
        answer = await client.post("/v1/autonomous", json={"task": "hi", "mcp_servers": []})
    assert answer.status_code == 503
    assert answer.json()["hosts"] == urls  # hosts of LMSTUDIO_BASE_URLS are named by their URL
    assert all(url in answer.json()["detail"] for url in urls)


async def test_models_list_hosts_and_states(fresh: dict[str, MockLMStudio], tmp_path: Path) -> None:
    settings = make_settings(lmstudio_hosts_file=str(hosts_file(tmp_path, fresh)), model_aliases="small=" + QWEN)
    async with app_client(settings, timeout=30) as client:
        listed = (await client.get("/v1/models")).json()
        by_alias = await client.post("/v1/autonomous", json={"task": "hi", "model": "small", "mcp_servers": []})
    entries = {m["id"]: m for m in listed["data"]}
    assert entries[QWEN]["hosts"] == [
        {"name": "a", "state": "loaded", "loaded_context_length": 4096},
        {"name": "b", "state": "available", "loaded_context_length": None},
    ]
    assert entries[QWEN]["state"] == "loaded"
    assert entries[MISTRAL]["hosts"] == [{"name": "b", "state": "loaded", "loaded_context_length": 4096}]
    assert entries[GEMMA]["hosts"] == [{"name": "c", "state": "loaded", "loaded_context_length": 4096}]
    assert by_alias.json()["model"] == QWEN  # aliases work across hosts
    assert [r["body"]["model"] for r in await fresh["a"].chat_requests()] == [QWEN]


async def test_an_unreachable_host_is_shown_so(tmp_path: Path) -> None:
    a, c = await asyncio.gather(start_mock(), start_mock())
    try:
        await a.configure(models=LAYOUT["a"])
        await c.configure(models=LAYOUT["c"])
        settings = make_settings(lmstudio_hosts_file=str(hosts_file(tmp_path, {"a": a, "c": c})), model_cache_ttl_s=0)
        async with app_client(settings, timeout=30) as client:
            assert (await client.get("/v1/models")).status_code == 200
            c.process.kill()
            await c.process.wait()
            listed = (await client.get("/v1/models")).json()
            gemma = await client.post("/v1/autonomous", json={"task": "hi", "model": GEMMA, "mcp_servers": []})
    finally:
        await asyncio.gather(a.stop(), c.stop())
    entries = {m["id"]: m for m in listed["data"]}
    assert entries[GEMMA]["hosts"] == [{"name": "c", "state": "unreachable", "loaded_context_length": None}]
    assert entries[GEMMA]["state"] == "not-loaded"
    assert entries[QWEN]["hosts"] == [{"name": "a", "state": "loaded", "loaded_context_length": 4096}]
    assert gemma.status_code == 503 and gemma.json()["hosts"] == ["c"]


async def test_load_and_unload_on_a_named_host(fresh: dict[str, MockLMStudio], tmp_path: Path) -> None:
    settings = make_settings(lmstudio_hosts_file=str(hosts_file(tmp_path, fresh)))
    async with app_client(settings, timeout=30) as client:
        await client.get("/v1/models")
        loaded = await client.post(f"/v1/models/{QWEN}/load", json={"host": "b"})
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["host"] == "b"
        listed = {m["id"]: m for m in (await client.get("/v1/models")).json()["data"]}
        assert listed[QWEN]["hosts"] == [
            {"name": "a", "state": "loaded", "loaded_context_length": 4096},
            {"name": "b", "state": "loaded", "loaded_context_length": 4096},
        ]
        unloaded = await client.post(f"/v1/models/{QWEN}/unload", json={"host": "a"})
        assert unloaded.json()["hosts"] == ["a"]
        unknown = await client.post(f"/v1/models/{QWEN}/load", json={"host": "nowhere"})
        everywhere = await client.post(f"/v1/models/{QWEN}/unload")
    assert unknown.status_code == 422 and unknown.json()["available_hosts"] == ["a", "b", "c"]
    assert everywhere.json()["hosts"] == ["b"]
    assert [r["path"] for r in await fresh["b"].requests() if "/models/" in r["path"]] == [
        "/api/v1/models/load",
        "/api/v1/models/unload",
    ]


def test_check_reports_every_host(fresh: dict[str, MockLMStudio], tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    path = hosts_file(tmp_path, {**fresh, "gone": dead})
    env = {**os.environ, "LMSTUDIO_HOSTS_FILE": str(path), "MCP_CONFIG": "", "BRIDGE_DATABASE_URL": _store()}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for name, mock in fresh.items():
        assert any(line.startswith(f"[ok]   LM Studio host {name!r} at {mock.base_url}") for line in lines), lines
    assert any(line.startswith("[fail] LM Studio host 'gone' at http://127.0.0.1:") for line in lines), lines


def _store() -> str:
    from tests.conftest import store_url

    return store_url()


def test_a_broken_hosts_file_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text("hosts:\n  - name: a\n    url: ftp://x\n")
    env = {**os.environ, "LMSTUDIO_HOSTS_FILE": str(path), "BRIDGE_DATABASE_URL": _store()}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "entry 1 ('a'): field \"url\": Value error, must start with http:// or https://" in done.stderr
