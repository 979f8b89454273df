"""Settings a person gets wrong: an unknown BRIDGE_*/LMSTUDIO_* variable is warned (with the closest name) at
start-up and fails `check`; the log level is case-insensitive; examples/demo-mcp.json works from any folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import OTHER_VARIABLES, Settings, unknown_variables
from services.mcp import load_mcp_config
from tests.conftest import store_url
from tests.helpers import REPO, eventually
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.processes import free_port, log_file, log_tail, spawn_python, terminate

pytestmark = pytest.mark.timeout(120)
CLOSEST = "unknown setting BRIDGE_MAX_ROUNDS is ignored; did you mean BRIDGE_MAX_ROUNDS_DEFAULT?"


def test_unknown_variables_name_the_closest_setting() -> None:
    environ = {
        "BRIDGE_MAX_ROUNDS": "abc",
        "lmstudio_base_ur": "http://x",  # names are case-insensitive, as the settings are
        "BRIDGE_ZZZZ": "1",
        "BRIDGE_LOG_LEVEL": "debug",
        "LMSTUDIO_BASE_URL": "http://x",
        "PATH": "/bin",
        **dict.fromkeys(OTHER_VARIABLES, "x"),  # read by other parts of the project (runs CLI, compose, demo)
    }
    warnings = unknown_variables(environ)
    assert warnings == [
        f"{CLOSEST} (docs/configuration.md lists every setting)",
        "unknown setting BRIDGE_ZZZZ is ignored (docs/configuration.md lists every setting)",
        "unknown setting lmstudio_base_ur is ignored; did you mean LMSTUDIO_BASE_URL? "
        "(docs/configuration.md lists every setting)",
    ]


@pytest.mark.parametrize("level", ["debug", "Info", " warning ", "ERROR"])
def test_log_level_is_case_insensitive(level: str) -> None:
    assert Settings(_env_file=None, log_level=level).log_level == level.strip().upper()


def env_for(mock: MockLMStudio, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "LMSTUDIO_"))}
    return {**env, "LMSTUDIO_BASE_URL": mock.base_url, "MCP_CONFIG": "", "BRIDGE_DATABASE_URL": store_url(), **extra}


def test_check_fails_on_an_unknown_variable(mock_server: MockLMStudio) -> None:
    env = env_for(mock_server, BRIDGE_MAX_ROUNDS="abc", BRIDGE_LOG_LEVEL="debug")
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"[fail] {CLOSEST} (docs/configuration.md lists every setting)" in done.stdout.splitlines()
    assert "[ok]   LM Studio at" in done.stdout, "the rest is still checked"


async def test_serve_warns_at_start_up(mock_server: MockLMStudio) -> None:
    port = free_port()
    env = env_for(mock_server, BRIDGE_MAX_ROUNDS="abc", BRIDGE_LOG_LEVEL="info")
    with log_file("unknown-var") as log:
        process = await spawn_python("app.cli", "serve", "--port", str(port), log=log, env=env)
        try:

            def warned() -> dict[str, object] | None:
                for line in log_tail(log.name, 20000).splitlines():
                    if CLOSEST in line:
                        return dict(json.loads(line))
                if process.returncode is not None:
                    raise AssertionError(f"exited {process.returncode}: {log_tail(log.name)}")
                return None

            record = await eventually(warned, 30, "the unknown-variable warning in the log")
        finally:
            await terminate(process)
    assert record["level"] == "WARNING" and record["logger"] == "lmstudio_bridge.settings"


def test_demo_mcp_json_works_from_any_folder(mock_server: MockLMStudio, tmp_path: Path) -> None:
    demo = REPO / "examples" / "demo-mcp.json"
    env = env_for(
        mock_server,
        MCP_CONFIG=str(demo),
        DEMO_REPO=str(REPO),
        DEMO_DIR=str(tmp_path),
        BRIDGE_PYTHON=sys.executable,
    )
    servers = load_mcp_config(demo, env)
    for cfg in servers.values():
        paths = [arg for arg in (cfg.command or "", *cfg.args) if "/" in arg]
        assert all(Path(p).is_absolute() and Path(p).exists() for p in paths), paths
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "check"],
        cwd=elsewhere,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(line.startswith("[ok]   filesystem: ") for line in done.stdout.splitlines()), done.stdout
