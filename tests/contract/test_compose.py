"""docker-compose.yml and the Dockerfile, checked without a Docker engine: a structural check of both
files, then the compose services' own commands and healthchecks run as local processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import AliasChoices

from app.settings import Settings
from services.mcp import load_mcp_config
from tests.helpers import REPO, TIME_CALL, eventually, script
from tests.processes import free_port, terminate

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DEFAULT_SERVICES = ("gateway", "mock-lmstudio")
OBSERVABILITY = ("otel-collector", "jaeger")
VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 60.0
SCRIPT = script(calls=[[TIME_CALL]])


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))


def setting_names() -> set[str]:
    """Every environment variable app/settings.py reads."""
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
    return names


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's `${VAR}` and `${VAR:-default}`."""
    return VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


def published(port: str) -> tuple[str, str]:
    """(host side, container port) of a `ports:` entry such as `127.0.0.1:8000:8000`."""
    host, _, container = port.rpartition(":")
    return host, container


# --- static checks ------------------------------------------------------------------------------


def test_compose_services_images_commands_and_profiles() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == {*DEFAULT_SERVICES, *OBSERVABILITY}
    gateway, mock = services["gateway"], services["mock-lmstudio"]
    # one image, two commands
    assert gateway["image"] == mock["image"] and gateway["build"] == mock["build"] == "."
    assert gateway["command"] == ["lmstudio-bridge", "serve"]
    assert mock["command"][:3] == ["python", "-m", "tests.mock_lmstudio"]
    assert mock["command"][mock["command"].index("--host") + 1] == "0.0.0.0"
    for name in DEFAULT_SERVICES:
        assert "profiles" not in services[name], name
        assert all(isinstance(part, str) for part in services[name]["command"]), name
    for name in OBSERVABILITY:
        assert services[name]["profiles"] == ["observability"], name
        assert ":" in services[name]["image"] and not services[name]["image"].endswith(":latest"), name
    # ports: the gateway's 8000 and the mock's 1234, published on loopback by default
    env = {}
    assert [published(interpolate(p, env)) for p in gateway["ports"]] == [("127.0.0.1:8000", "8000")]
    mock_port = mock["command"][mock["command"].index("--port") + 1]
    assert [published(p) for p in mock["ports"]] == [(f"127.0.0.1:{mock_port}", mock_port)]
    assert gateway["depends_on"] == {"mock-lmstudio": {"condition": "service_healthy"}}
    assert "host.docker.internal:host-gateway" in gateway["extra_hosts"]


def test_compose_healthchecks() -> None:
    services = compose()["services"]
    for name in DEFAULT_SERVICES:
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD" and check["test"][1:3] == ["python", "-c"], name
        assert {"interval", "timeout", "retries", "start_period"} <= set(check), name
    assert "/healthz" in services["gateway"]["healthcheck"]["test"][3]
    assert "/_mock/health" in services["mock-lmstudio"]["healthcheck"]["test"][3]


def test_compose_environment_uses_real_settings() -> None:
    gateway = compose()["services"]["gateway"]
    env = gateway["environment"]
    unknown = {name for name in env if name not in setting_names() and not name.startswith("OTEL_")}
    assert not unknown, f"docker-compose.yml sets variables app/settings.py does not read: {unknown}"
    assert env["BRIDGE_HOST"] == "0.0.0.0" and env["BRIDGE_PORT"] == "8000"
    assert interpolate(env["LMSTUDIO_BASE_URL"], {}) == "http://mock-lmstudio:1234"
    assert interpolate(env["OTEL_EXPORTER_OTLP_ENDPOINT"], {}) == "", "tracing export must be opt-in"
    # the user's mcp.json is mounted where MCP_CONFIG points; the default one is valid
    mounts = [interpolate(v, {}).rsplit(":", 2) for v in gateway["volumes"]]
    source, _, mode = next(m for m in mounts if m[1] == env["MCP_CONFIG"])
    assert mode == "ro" and source == "./deploy/mcp.json"
    assert set(load_mcp_config(REPO / source, {})) == {"time"}
    with_lmstudio = interpolate(gateway["volumes"][0], {"MCP_JSON": "~/.lmstudio/mcp.json"})
    assert with_lmstudio == "~/.lmstudio/mcp.json:/config/mcp.json:ro"
    # the run store's SQLite file (relative to the image's WORKDIR /app) sits in a named volume
    assert interpolate(env["BRIDGE_DATABASE_URL"], {}) == "sqlite+aiosqlite:///./data/runs.db"
    assert "runs:/app/data" in gateway["volumes"] and "runs" in compose()["volumes"]


def test_observability_profile_wiring() -> None:
    services = compose()["services"]
    collector = services["otel-collector"]
    source, target, _ = collector["volumes"][0].split(":")
    assert collector["command"] == [f"--config={target}"]
    config = yaml.safe_load((REPO / source).read_text(encoding="utf-8"))
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    pipeline = config["service"]["pipelines"]["traces"]
    assert set(pipeline["receivers"]) <= set(config["receivers"])
    assert set(pipeline["processors"]) <= set(config["processors"])
    assert set(pipeline["exporters"]) <= set(config["exporters"])
    jaeger_host = config["exporters"]["otlp/jaeger"]["endpoint"].split(":")[0]
    assert jaeger_host in services and services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    # the endpoint the docs tell the gateway to use names the collector's OTLP/HTTP port
    assert any(published(p)[1] == "4318" for p in collector["ports"])


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_is_multi_stage_slim_non_root_with_healthcheck_and_node() -> None:
    steps = dockerfile()
    stages = [args for op, args in steps if op == "FROM"]
    assert len(stages) >= 3 and all(" AS " in s.upper() for s in stages), stages
    assert stages[-1].startswith("python:3.11-slim"), "the final stage is slim"
    assert any(s.startswith("node:20") for s in stages), "Node 20 for npx MCP servers"
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    ops = dict(final)
    assert "COPY --from=node /usr/local/bin/node" in " ".join(f"{op} {a}" for op, a in final)
    assert "npx-cli.js /usr/local/bin/npx" in ops["RUN"]
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "runs as a non-root user"
    assert "useradd" in ops["RUN"] and users[-1] in ops["RUN"]
    assert "/healthz" in ops["HEALTHCHECK"] and "urllib.request" in ops["HEALTHCHECK"]
    assert ops["EXPOSE"] == "8000"
    assert ops["VOLUME"] == '["/app/data"]' and "chown bridge /config /app/data" in ops["RUN"], "the run store's volume"
    assert "MCP_CONFIG=/config/mcp.json" in ops["ENV"] and "host.docker.internal" in ops["ENV"]
    assert ops["CMD"] == '["lmstudio-bridge", "serve"]' == '["' + '", "'.join(compose_cmd()) + '"]'
    # every file copied from the context exists and is not excluded by .dockerignore
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    for op, args in steps:
        if op == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), source
                assert source not in ignored, source
    assert {".venv", "node_modules", ".git", ".env"} <= set(ignored)


def compose_cmd() -> list[str]:
    return list(compose()["services"]["gateway"]["command"])


def test_image_pins_match_the_project() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    pinned = re.search(r"mcp-server-time==[\w.]+", text)
    assert pinned and pinned.group(0) in pyproject, "the image's time server is the one the tests use"


# --- the compose commands, run as local processes -------------------------------------------------


async def _healthy(check: list[str], env: Mapping[str, str]) -> None:
    """Run a compose healthcheck (`CMD python -c ...`) until it passes, like Docker does."""
    argv = [sys.executable if part == "python" else part for part in check[1:]]

    async def passes() -> bool:
        process = await asyncio.create_subprocess_exec(
            *argv, env=dict(env), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        return await process.wait() == 0

    await eventually(passes, START_TIMEOUT_S, f"healthcheck {check} passing", every_s=0.2)


@contextlib.asynccontextmanager
async def _process(argv: list[str], env: Mapping[str, str], cwd: Path, log: Path) -> AsyncIterator[Any]:
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *argv, env=dict(env), cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )
        try:
            yield process
        finally:
            await terminate(process, 30)


def _local(argv: list[str]) -> list[str]:
    """The image's executables are the virtualenv's here."""
    first = str(BIN / argv[0]) if (BIN / argv[0]).exists() else argv[0]
    return [sys.executable if argv[0] == "python" else first, *argv[1:]]


@pytest.mark.timeout(180)
async def test_compose_commands_run_and_become_healthy(tmp_path: Path) -> None:
    services = compose()["services"]
    base = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    for name in [n for n in base if n in setting_names() or n.startswith("OTEL_")]:
        del base[name]  # only what the compose file sets

    # the mock LM Studio: its command with the port moved to a free one (the image's WORKDIR holds tests/)
    mock = services["mock-lmstudio"]
    mock_port = str(free_port())
    argv = list(mock["command"])
    argv[argv.index("--host") + 1] = "127.0.0.1"
    compose_mock_port = argv[argv.index("--port") + 1]
    argv[argv.index("--port") + 1] = mock_port
    mock_check = [part.replace(f":{compose_mock_port}/", f":{mock_port}/") for part in mock["healthcheck"]["test"]]

    gateway = services["gateway"]
    env = {name: interpolate(str(value), {}) for name, value in gateway["environment"].items()}
    port = str(free_port())
    env["BRIDGE_HOST"], env["BRIDGE_PORT"] = "127.0.0.1", port
    env["LMSTUDIO_BASE_URL"] = env["LMSTUDIO_BASE_URL"].replace(
        f"mock-lmstudio:{compose_mock_port}", f"127.0.0.1:{mock_port}"
    )
    source, target, _ = interpolate(gateway["volumes"][0], {}).rsplit(":", 2)
    assert env["MCP_CONFIG"] == target
    env["MCP_CONFIG"] = str(REPO / source)  # the mount, without a container
    gateway_env = {**base, **env}

    async with _process(_local(argv), base, REPO, tmp_path / "mock.log"):
        await _healthy(mock_check, base)  # depends_on: condition: service_healthy
        async with _process(_local(gateway["command"]), gateway_env, tmp_path, tmp_path / "gateway.log") as proc:
            try:
                await _healthy(gateway["healthcheck"]["test"], gateway_env)
            except AssertionError:
                raise AssertionError((tmp_path / "gateway.log").read_text()[-3000:]) from None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                ready = await client.get("/readyz")
                assert ready.status_code == 200, ready.text
                models = (await client.get("/v1/models")).json()
                assert "qwen/qwen3-4b" in [m["id"] for m in models["data"]]
                servers = (await client.get("/v1/mcp/servers")).json()
                assert [s["name"] for s in servers["data"]] == ["time"]
                run = await client.post("/v1/autonomous", json={"task": f"What time is it? {SCRIPT}"})
                assert run.status_code == 200, run.text
                assert [s["tool"] for s in run.json()["steps"]] == ["get_current_time"]
            proc.send_signal(signal.SIGTERM)  # `docker stop`: a graceful, clean exit
            assert await asyncio.wait_for(proc.wait(), 40) == 0, (tmp_path / "gateway.log").read_text()[-3000:]
