"""A Python SDK generated from openapi/openapi.json (openapi-python-client, offline) works against a live
gateway: it lists the models, runs a task that calls a real MCP tool, and reads problem documents."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.contract.conftest import OPENAPI_PATH
from tests.helpers import TIME_CALL, script

PACKAGE = "lmstudio_bridge_client"
SCRIPT = script(calls=[[TIME_CALL]])


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The generated client package, importable for the duration of the module."""
    root = tmp_path_factory.mktemp("sdk")
    config = root / "config.yaml"
    config.write_text("post_hooks: []\n")  # no ruff formatting of the generated code: not needed to import it
    generator = Path(sys.executable).with_name("openapi-python-client")
    command = [str(generator), "generate", "--path", str(OPENAPI_PATH), "--output-path", str(root / PACKAGE)]
    done = subprocess.run(
        [*command, "--meta", "none", "--config", str(config)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _api(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.api.{name}")


def _models() -> Any:
    return importlib.import_module(f"{PACKAGE}.models")


def test_the_sdk_has_every_operation(sdk: ModuleType) -> None:
    for module in (
        "models.list_models",
        "models.load_model",
        "mcp.list_mcp_servers",
        "mcp.list_mcp_tools",
        "mcp.call_mcp_tool",
        "autonomous.run_autonomous",
        "autonomous.run_with_mcp",
        "autonomous.run_with_multiple_mcps",
        "autonomous.run_discover",
        "openai.create_chat_completion",
        "health.healthz",
        "health.readyz",
    ):
        assert hasattr(_api(module), "asyncio_detailed"), module


@pytest.mark.usefixtures("mock")  # reset
async def test_sdk_lists_models_and_runs_a_task(sdk: ModuleType, live: httpx.AsyncClient) -> None:
    models = _models()
    client = sdk.Client(base_url=str(live.base_url).rstrip("/"), timeout=60, raise_on_unexpected_status=True)
    async with client:
        listing = await _api("models.list_models").asyncio(client=client)
        assert isinstance(listing, models.ModelList)
        ids = [m.id for m in listing.data]
        assert "qwen/qwen3-4b" in ids
        assert [m.id for m in listing.data if m.default] == ["qwen/qwen3-4b"]

        body = models.WithMCPRequest(mcp_name="time", task=f"What time is it in UTC? {SCRIPT}")
        result = await _api("autonomous.run_with_mcp").asyncio(client=client, body=body)
        assert isinstance(result, models.RunResult), result
        assert result.status == "completed" and result.model == "qwen/qwen3-4b"
        assert [(s.server, s.tool, s.is_error) for s in result.steps] == [("time", "get_current_time", False)]
        assert "UTC" in result.steps[0].output and result.output.startswith("Based on the tools")

        general = models.AutonomousRequest(task=f"Same, all servers. {SCRIPT}", max_rounds=2)
        run = await _api("autonomous.run_autonomous").asyncio(client=client, body=general)
        assert isinstance(run, models.RunResult) and run.rounds == 1
        assert sorted(run.mcp_servers) == ["filesystem", "memory", "time"]

        tools = await _api("mcp.list_mcp_tools").asyncio(name="time", client=client)
        assert isinstance(tools, models.ToolList)
        assert "get_current_time" in [t.name for t in tools.data]
        arguments = models.CallMcpToolArguments.from_dict({"timezone": "UTC"})
        called = await _api("mcp.call_mcp_tool").asyncio(
            name="time", tool="get_current_time", client=client, body=arguments
        )
        assert isinstance(called, models.ToolResult) and called.is_error is False

        # errors come back as the Problem model, with the stable code and the extras
        unknown = models.WithMCPRequest(mcp_name="nope", task="x")
        problem = await _api("autonomous.run_with_mcp").asyncio_detailed(client=client, body=unknown)
        assert problem.status_code == 422 and isinstance(problem.parsed, models.Problem)
        assert problem.parsed.code == "mcp_server_not_found"
        assert problem.parsed.additional_properties["available_servers"] == ["time", "memory", "filesystem"]
        missing = await _api("mcp.list_mcp_tools").asyncio_detailed(name="nope", client=client)
        assert missing.status_code == 404 and missing.parsed.code == "mcp_server_not_found"
