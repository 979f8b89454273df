"""The keys file (BRIDGE_KEYS_FILE) through the real process: a broken file stops start-up naming the entry
and the field; a running gateway picks up an edit without a restart (polled every KEYS_POLL_S), keeps its
keys when an edit is broken (and logs why), and reloads on SIGHUP."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.lifespan import KEYS_POLL_S
from tests.conftest import store_url
from tests.helpers import REPO, eventually, mcp_servers_json, script
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.processes import free_port
from tests.scenarios.conftest import SETTING_PREFIXES, gateway_process

pytestmark = pytest.mark.timeout(120)

ALPHA = "alpha-key-0123456789abcdef"
BETA = "beta-key-0123456789abcdef"
GAMMA = "gamma-key-0123456789abcdef"
DELTA = "delta-key-0123456789abcdef"
RELOAD_WITHIN_S = 10.0  # a few polls of KEYS_POLL_S


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def keys_doc(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(entries)}


def write_keys(path: Path, document: dict[str, Any] | str, mtime: float | None = None) -> None:
    """Write the file in one go (a temporary file renamed over it, as editors do)."""
    text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    tmp.replace(path)


BROKEN = keys_doc(
    {"name": "alpha", "key": ALPHA},
    {"name": "broken-one", "key": BETA, "servers": ["time"], "tols": ["time__*"]},
)


def clean_env(**env: str) -> dict[str, str]:
    """This process's environment without gateway settings, plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    return {**base, "PYTHONPATH": str(REPO), "BRIDGE_DATABASE_URL": store_url(), **env}


def run_python(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


# --- start-up -----------------------------------------------------------------------------------------


def test_a_broken_keys_file_stops_serve_naming_entry_and_field(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    write_keys(keys, BROKEN)
    env = clean_env(BRIDGE_KEYS_FILE=str(keys), MCP_CONFIG="", HOME=str(tmp_path))
    result = run_python("-m", "app.cli", "serve", "--port", str(free_port()), env=env, cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert str(keys) in out and "entry 2 ('broken-one')" in out and 'field "tols"' in out, out
    assert BETA not in out and ALPHA not in out  # the keys themselves are never printed


def test_a_broken_keys_file_stops_serve_with_exit_code_2_and_a_message(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    write_keys(keys, BROKEN)
    env = clean_env(BRIDGE_KEYS_FILE=str(keys), MCP_CONFIG="", HOME=str(tmp_path))
    result = run_python("-m", "app.cli", "serve", "--port", str(free_port()), env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Invalid keys file (BRIDGE_KEYS_FILE)" in result.stderr and "Traceback" not in result.stderr


def test_a_broken_keys_file_stops_the_uvicorn_factory_with_exit_code_2(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    write_keys(keys, BROKEN)
    env = clean_env(BRIDGE_KEYS_FILE=str(keys), MCP_CONFIG="", HOME=str(tmp_path))
    args = ("-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(free_port()))
    result = run_python(*args, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Invalid keys file (BRIDGE_KEYS_FILE)" in result.stderr
    assert "entry 2 ('broken-one')" in result.stderr and 'field "tols"' in result.stderr


def test_a_missing_keys_file_stops_start_up(tmp_path: Path) -> None:
    env = clean_env(BRIDGE_KEYS_FILE=str(tmp_path / "nope.yaml"), MCP_CONFIG="", HOME=str(tmp_path))
    args = ("-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(free_port()))
    result = run_python(*args, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "nope.yaml: cannot be read" in result.stderr


async def test_require_auth_accepts_a_keys_file(tmp_path: Path, mock: MockLMStudio) -> None:
    keys = tmp_path / "keys.yaml"
    write_keys(keys, keys_doc({"name": "alpha", "key": ALPHA}))
    async with gateway_process(
        BRIDGE_KEYS_FILE=str(keys), BRIDGE_REQUIRE_AUTH="true", LMSTUDIO_BASE_URL=mock.base_url, MCP_CONFIG=""
    ) as gw:
        assert (await gw.client.get("/v1/models", headers=auth(ALPHA))).status_code == 200


# --- reloading in a running gateway -------------------------------------------------------------------


def log_messages(path: str) -> list[str]:
    """The `msg` of each JSON log line of the gateway's log."""
    messages = []
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                messages.append(str(json.loads(line).get("msg", "")))
            except ValueError:
                continue  # a line cut off while being written
    return messages


async def status_of(client: httpx.AsyncClient, key: str) -> int:
    return (await client.get("/v1/mcp/servers", headers=auth(key))).status_code


async def servers_of(client: httpx.AsyncClient, key: str) -> set[str] | None:
    response = await client.get("/v1/mcp/servers", headers=auth(key))
    return {s["name"] for s in response.json()["data"]} if response.status_code == 200 else None


async def test_edits_take_effect_without_restart_and_broken_ones_keep_the_old_keys(
    tmp_path: Path, mock: MockLMStudio
) -> None:
    keys = tmp_path / "keys.yaml"
    mcp_json = tmp_path / "mcp.json"
    servers = mcp_servers_json(str(tmp_path))["mcpServers"]
    mcp_json.write_text(json.dumps({"mcpServers": {"time": servers["time"], "memory": servers["memory"]}}))
    write_keys(keys, keys_doc({"name": "alpha", "key": ALPHA, "servers": ["time"]}))
    async with gateway_process(
        BRIDGE_KEYS_FILE=str(keys), LMSTUDIO_BASE_URL=mock.base_url, MCP_CONFIG=str(mcp_json)
    ) as gw:
        client = gw.client
        assert await servers_of(client, ALPHA) == {"time"}
        assert await status_of(client, BETA) == 401

        # 1. a new key, by its hash, and a changed scope: in force within a few polls, no restart
        write_keys(
            keys,
            keys_doc(
                {"name": "alpha", "key": ALPHA, "servers": ["time", "memory"]},
                {"name": "beta", "key_sha256": hashlib.sha256(BETA.encode()).hexdigest(), "servers": ["memory"]},
            ),
        )

        async def beta_works() -> bool:
            return await status_of(client, BETA) == 200

        await eventually(beta_works, RELOAD_WITHIN_S, "the new key accepted", every_s=0.2)
        assert await servers_of(client, BETA) == {"memory"}
        assert await servers_of(client, ALPHA) == {"time", "memory"}
        pid = gw.process.pid

        # 2. a broken edit: the previous keys stay in force, and the log says why
        write_keys(keys, BROKEN)

        def logged() -> list[str]:
            return [m for m in log_messages(gw.log_path) if m.startswith("keys file not reloaded")]

        [message] = await eventually(logged, RELOAD_WITHIN_S, "the broken edit logged", every_s=0.2)
        assert "previous keys stay in force" in message, message
        assert "entry 2 ('broken-one')" in message and 'field "tols"' in message, message
        assert BETA not in gw.log_tail(100_000) and ALPHA not in gw.log_tail(100_000)
        assert await servers_of(client, ALPHA) == {"time", "memory"}
        assert await servers_of(client, BETA) == {"memory"}  # not the broken entry's scope, not gone

        # 3. mended: a removed key stops working
        write_keys(keys, keys_doc({"name": "gamma", "key": GAMMA, "servers": ["time"]}))

        async def swapped() -> bool:
            return await status_of(client, GAMMA) == 200 and await status_of(client, ALPHA) == 401

        await eventually(swapped, RELOAD_WITHIN_S, "the mended file in force", every_s=0.2)
        assert await status_of(client, BETA) == 401
        assert gw.process.returncode is None and gw.process.pid == pid  # the same process all along


async def test_sighup_forces_a_reload(tmp_path: Path, mock: MockLMStudio) -> None:
    keys = tmp_path / "keys.yaml"
    write_keys(keys, keys_doc({"name": "alpha", "key": ALPHA}), mtime=1_000_000)
    async with gateway_process(BRIDGE_KEYS_FILE=str(keys), LMSTUDIO_BASE_URL=mock.base_url, MCP_CONFIG="") as gw:
        client = gw.client
        assert await status_of(client, ALPHA) == 200
        # the same mtime: polling cannot see the change, only SIGHUP loads it
        write_keys(keys, keys_doc({"name": "delta", "key": DELTA}), mtime=1_000_000)
        for _ in range(6):  # three polls (KEYS_POLL_S) go by without a reload
            assert await status_of(client, DELTA) == 401 and await status_of(client, ALPHA) == 200
            await asyncio.sleep(KEYS_POLL_S / 2)
        gw.process.send_signal(signal.SIGHUP)

        async def reloaded() -> bool:
            return await status_of(client, DELTA) == 200

        await eventually(reloaded, RELOAD_WITHIN_S, "SIGHUP reload", every_s=0.1)
        assert await status_of(client, ALPHA) == 401
        assert gw.process.returncode is None  # SIGHUP did not stop the gateway

        # SIGHUP with a broken file: logged, the keys stay
        write_keys(keys, BROKEN, mtime=1_000_000)
        gw.process.send_signal(signal.SIGHUP)

        def logged() -> list[str]:
            return [m for m in log_messages(gw.log_path) if m.startswith("keys file not reloaded")]

        [message] = await eventually(logged, RELOAD_WITHIN_S, "the broken reload logged", every_s=0.1)
        assert 'field "tols"' in message, message
        assert await status_of(client, DELTA) == 200 and gw.process.returncode is None


async def test_a_key_added_by_a_reload_is_kept_out_of_the_store(tmp_path: Path, mock: MockLMStudio) -> None:
    keys = tmp_path / "keys.yaml"
    write_keys(keys, keys_doc({"name": "alpha", "key": ALPHA}))
    async with gateway_process(BRIDGE_KEYS_FILE=str(keys), LMSTUDIO_BASE_URL=mock.base_url, MCP_CONFIG="") as gw:
        write_keys(keys, keys_doc({"name": "alpha", "key": ALPHA}, {"name": "gamma", "key": GAMMA}))

        async def gamma_works() -> bool:
            return await status_of(gw.client, GAMMA) == 200

        await eventually(gamma_works, RELOAD_WITHIN_S, "the new key accepted", every_s=0.2)
        runs = []
        for key in (ALPHA, GAMMA):
            task = f"my key is {key} " + script(answer="ok")
            response = await gw.client.post("/v1/autonomous", json={"task": task, "mcp_servers": []}, headers=auth(key))
            assert response.status_code == 200, response.text
            runs.append((key, response.json()["run_id"]))
        for key, run_id in runs:

            async def stored(key: str = key, run_id: str = run_id) -> str | None:
                response = await gw.client.get(f"/v1/runs/{run_id}", headers=auth(key))
                done = response.status_code == 200 and response.json()["status"] == "completed"
                return response.text if done else None

            text = await eventually(stored, 10, f"run {run_id} stored", every_s=0.1)
            assert key not in text, f"{key[:5]}... stored in clear"


# --- a FIFO or a huge file in the keys file's place (issue 29, item 5) ----------------------------------

HUGE_BYTES = 60_000_000


def huge_keys(path: Path) -> None:
    """A valid keys file padded with a comment to 60 MB (it used to stall the event loop for seconds)."""
    with path.open("w") as out:
        out.write(yaml.safe_dump(keys_doc({"name": "delta", "key": DELTA})) + "# ")
        out.write("x" * HUGE_BYTES + "\n")


@pytest.mark.parametrize("kind", ["fifo", "huge"])
def test_a_fifo_or_a_huge_keys_file_stops_start_up_clearly(tmp_path: Path, kind: str) -> None:
    keys = tmp_path / "keys.yaml"
    os.mkfifo(keys) if kind == "fifo" else huge_keys(keys)
    env = clean_env(BRIDGE_KEYS_FILE=str(keys), MCP_CONFIG="", HOME=str(tmp_path))
    result = run_python("-m", "app.cli", "serve", "--port", str(free_port()), env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    said = "is a FIFO, not a regular file: refused" if kind == "fifo" else "over the limit of 1048576 bytes: refused"
    assert "Invalid keys file (BRIDGE_KEYS_FILE)" in result.stderr and said in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


async def test_a_fifo_or_a_huge_keys_file_at_reload_keeps_the_old_keys_and_healthz_answers(
    tmp_path: Path, mock: MockLMStudio
) -> None:
    keys = tmp_path / "keys.yaml"
    write_keys(keys, keys_doc({"name": "alpha", "key": ALPHA}))
    latencies: list[float] = []
    async with gateway_process(BRIDGE_KEYS_FILE=str(keys), LMSTUDIO_BASE_URL=mock.base_url, MCP_CONFIG="") as gw:
        stop = asyncio.Event()

        async def watch_healthz() -> None:  # every answer within 5 s (the FIFO froze it until written to)
            async with httpx.AsyncClient(base_url=str(gw.client.base_url), timeout=5) as probe:
                while not stop.is_set():
                    started = time.perf_counter()
                    assert (await probe.get("/healthz")).status_code == 200
                    latencies.append(time.perf_counter() - started)
                    await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch_healthz())
        try:
            for kind, said in (("fifo", "is a FIFO"), ("huge", "over the limit")):
                replacement = tmp_path / f"{kind}.yaml"
                os.mkfifo(replacement) if kind == "fifo" else huge_keys(replacement)
                replacement.replace(keys)

                def refused(said: str = said) -> list[str]:
                    return [
                        m for m in log_messages(gw.log_path) if m.startswith("keys file not reloaded") and said in m
                    ]

                [message] = await eventually(refused, RELOAD_WITHIN_S, f"the {kind} refused", every_s=0.1)
                assert "previous keys stay in force" in message, message
                assert await status_of(gw.client, ALPHA) == 200 and await status_of(gw.client, DELTA) == 401
                assert not watcher.done()
                keys.unlink()
        finally:
            stop.set()
            await watcher  # raises what the watcher saw
    latencies.sort()
    print(  # recorded, not asserted: a busy machine's figures (the loop never waited on the file)
        f"/healthz while the keys file was a FIFO, then 60 MB: {len(latencies)} answers, median "
        f"{latencies[len(latencies) // 2] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
    )
    assert latencies
