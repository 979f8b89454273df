"""The console script: `check`, start-up errors, `serve` and the uvicorn factory as real processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import store_url
from tests.helpers import REPO, write_mcp_json
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.processes import free_port, wait_healthy

pytestmark = pytest.mark.timeout(120)


def cli(*args: str, env: dict[str, str], timeout: float = 90, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """`python -m app.cli <args>` with `env` on top of this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "BRIDGE_DATABASE_URL": store_url(), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_check_reports_lmstudio_and_every_server(mock_server: MockLMStudio, tmp_path: Path) -> None:
    config = write_mcp_json(
        tmp_path / "mcp.json",
        str(tmp_path),
        broken={"command": "/nonexistent/server"},
        off={"command": "x", "disabled": True},
    )
    result = cli("check", env={"LMSTUDIO_BASE_URL": mock_server.base_url, "MCP_CONFIG": str(config)})
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "[ok]   configuration is valid" in out
    assert "[ok]   LM Studio at" in out and "qwen/qwen3-4b" in out
    for name in ("time", "filesystem", "memory", "everything", "fault"):
        assert f"[ok]   {name}: " in out
    assert "[fail] broken:" in out and "[skip] off:" in out


def test_check_passes_when_all_is_well(mock_server: MockLMStudio, tmp_path: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(
        json.dumps({"mcpServers": {"time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]}}})
    )
    result = cli("check", env={"LMSTUDIO_BASE_URL": mock_server.base_url, "MCP_CONFIG": str(config)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ok]   time: 2 tools" in result.stdout


def test_check_says_when_there_is_no_mcp_json(mock_server: MockLMStudio, tmp_path: Path) -> None:
    env = {"LMSTUDIO_BASE_URL": mock_server.base_url, "HOME": str(tmp_path)}
    result = cli("check", env=env, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[warn] no mcp.json found" in result.stdout


def test_check_fails_when_lmstudio_is_down(tmp_path: Path) -> None:
    result = cli(
        "check",
        env={
            "LMSTUDIO_BASE_URL": f"http://127.0.0.1:{free_port()}",
            "MCP_CONFIG": "",
            "HOME": str(tmp_path),
            "BRIDGE_LMSTUDIO_RETRIES": "0",
        },
    )
    assert result.returncode == 1
    assert "[fail] LM Studio at" in result.stdout and "not reachable" in result.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MODEL_CACHE_TTL_S": "soon"}, "MODEL_CACHE_TTL_S"),
        ({"LMSTUDIO_BASE_URL": "localhost:1234"}, "LMSTUDIO_BASE_URL"),
        ({"BRIDGE_MODEL_ALIASES": "coding"}, "BRIDGE_MODEL_ALIASES"),
        ({"BRIDGE_MAX_CONCURRENT_RUNS": "0"}, "BRIDGE_MAX_CONCURRENT_RUNS"),
    ],
)
def test_invalid_settings_stop_start_up_with_a_clear_message(env: dict[str, str], message: str) -> None:
    result = cli("serve", "--port", str(free_port()), env=env, timeout=30)
    assert result.returncode == 2
    assert "Invalid configuration" in result.stderr and message in result.stderr


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"mcpServers": {"fs": {"args": ["x"]}}}', '"fs"'),
        ('{"mcpServers": {"fs": {"command": 5}}}', '"command"'),
        ('{"mcpServers": {"fs": {"command": "${env:NOPE_NOT_SET}"}}}', "NOPE_NOT_SET"),
    ],
)
def test_broken_mcp_json_stops_start_up(tmp_path: Path, config: str, message: str) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(config)
    result = cli("serve", "--port", str(free_port()), env={"MCP_CONFIG": str(path)}, timeout=30)
    assert result.returncode == 2
    assert "Invalid MCP configuration" in result.stderr and message in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", "{port}"],
        ["-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1", "--port", "{port}"],
    ],
    ids=["lmstudio-bridge-serve", "uvicorn-factory"],
)
async def test_server_processes_start_answer_and_stop(mock_server: MockLMStudio, command: list[str]) -> None:
    port = free_port()
    args = [part.format(port=port) for part in command]
    env = {
        **os.environ,
        "LMSTUDIO_BASE_URL": mock_server.base_url,
        "MCP_CONFIG": "",
        "BRIDGE_DATABASE_URL": store_url(),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        await wait_healthy(f"http://127.0.0.1:{port}/healthz", process, 30)
        async with httpx.AsyncClient(timeout=10) as client:
            models = (await client.get(f"http://127.0.0.1:{port}/v1/models")).json()
        assert "qwen/qwen3-4b" in [m["id"] for m in models["data"]]
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    # plain uvicorn re-raises SIGTERM once it has shut down cleanly; `serve` exits 0 after its drain
    assert process.returncode == (0 if "app.cli" in args else -signal.SIGTERM), err.decode()[-2000:]
    assert "Application shutdown complete" in err.decode()
    if "app.cli" in args:  # our own logging: one JSON object per line
        lines = [line for line in err.decode().splitlines() if line.strip()]
        assert lines and all(json.loads(line)["level"] for line in lines)


def test_check_and_stdio_take_an_instance_id_of_their_own() -> None:
    """Sharing the run store of a gateway on the same host, they must not take its runs as their leftovers."""
    from app.cli import own_instance
    from tests.conftest import make_settings

    settings = make_settings(instance_id="box")
    assert own_instance(settings, "check").instance_id == f"box:check-{os.getpid()}"
    assert own_instance(settings, "mcp").instance_id == f"box:mcp-{os.getpid()}"
    assert settings.instance_id == "box"


@pytest.mark.parametrize("command", ["serve", "mcp"])
def test_a_store_folder_that_cannot_be_made_stops_start_up_in_one_line(tmp_path: Path, command: str) -> None:
    """Issue 29: a relative `data/` that cannot be made (an MCP client's working folder): one line naming
    BRIDGE_DATABASE_URL on stderr, exit 2, no traceback (was a raw FileNotFoundError)."""
    (tmp_path / "data").write_text("a file where the store's folder would go")
    result = cli(command, env={"BRIDGE_DATABASE_URL": "sqlite+aiosqlite:///./data/runs.db"}, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "BRIDGE_DATABASE_URL" in lines[0] and str(tmp_path / "data" / "runs.db") in lines[0], lines


def test_the_stdio_mode_keeps_its_store_in_the_user_data_directory(tmp_path: Path) -> None:
    """Without BRIDGE_DATABASE_URL, `lmstudio-bridge mcp` records its runs under $XDG_DATA_HOME (else
    ~/.local/share), whatever folder its client starts it in; a data directory that cannot be made: exit 2."""
    (tmp_path / "data").write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if k != "BRIDGE_DATABASE_URL"}

    def mcp_mode(data_home: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "mcp"],
            env={**env, "PYTHONPATH": str(REPO), "XDG_DATA_HOME": str(data_home)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    xdg = tmp_path / "xdg"
    done = mcp_mode(xdg)
    assert done.returncode == 0, done.stderr  # stdin at its end: the client went away
    assert (xdg / "lmstudio-bridge" / "runs.db").stat().st_size > 0
    bad = mcp_mode(tmp_path / "data")
    assert bad.returncode == 2 and "BRIDGE_DATABASE_URL" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
