"""docker-compose.yml and the Dockerfile, checked without a Docker engine: a structural check of both
files, then the compose services' own commands and healthchecks run as local processes: the default
profile (gateway + mock LM Studio) and the `replicas` profile (two gateways on one PostgreSQL + the mock)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from pydantic import AliasChoices
from sqlalchemy.engine import make_url

from app.settings import Settings
from services.agent import FINISHED_STATUSES
from services.mcp import load_mcp_config
from tests.helpers import REPO, TIME_CALL, eventually, script
from tests.postgres import PostgresCluster, find_pg_bin
from tests.processes import free_port, log_tail, terminate

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DEFAULT_SERVICES = ("gateway", "mock-lmstudio")
OBSERVABILITY = ("otel-collector", "jaeger")
REPLICAS = ("gateway-a", "gateway-b")
REPLICA_PORTS = {"gateway-a": "127.0.0.1:8001", "gateway-b": "127.0.0.1:8002"}
GATEWAYS = ("gateway", *REPLICAS)
Process = asyncio.subprocess.Process
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
    assert set(services) == {*DEFAULT_SERVICES, *OBSERVABILITY, *REPLICAS, "postgres"}
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
    env: dict[str, str] = {}
    assert [published(interpolate(p, env)) for p in gateway["ports"]] == [("127.0.0.1:8000", "8000")]
    mock_port = mock["command"][mock["command"].index("--port") + 1]
    assert [published(p) for p in mock["ports"]] == [(f"127.0.0.1:{mock_port}", mock_port)]
    assert gateway["depends_on"] == {"mock-lmstudio": {"condition": "service_healthy"}}
    assert "host.docker.internal:host-gateway" in gateway["extra_hosts"]


def test_compose_healthchecks() -> None:
    services = compose()["services"]
    for name in (*DEFAULT_SERVICES, *REPLICAS):
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD" and check["test"][1:3] == ["python", "-c"], name
        assert {"interval", "timeout", "retries", "start_period"} <= set(check), name
    for name in GATEWAYS:
        assert services[name]["healthcheck"] == services["gateway"]["healthcheck"], name
    assert "/healthz" in services["gateway"]["healthcheck"]["test"][3]
    assert "/_mock/health" in services["mock-lmstudio"]["healthcheck"]["test"][3]
    postgres = services["postgres"]["healthcheck"]
    assert postgres["test"][:2] == ["CMD", "pg_isready"] and {"interval", "timeout", "retries"} <= set(postgres)


def test_compose_environment_uses_real_settings() -> None:
    services = compose()["services"]
    for name in GATEWAYS:
        env = services[name]["environment"]
        unknown = {var for var in env if var not in setting_names() and not var.startswith("OTEL_")}
        assert not unknown, f"docker-compose.yml's {name} sets variables app/settings.py does not read: {unknown}"
    gateway = services["gateway"]
    env = gateway["environment"]
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


def test_replicas_profile_wiring() -> None:
    doc = compose()
    services = doc["services"]
    gateway, postgres = services["gateway"], services["postgres"]
    assert postgres["profiles"] == ["replicas"]
    assert re.fullmatch(r"postgres:15\.\d+", postgres["image"]), "a pinned official PostgreSQL 15 image"
    assert "ports" not in postgres, "the database is reachable on the compose network only"
    [volume] = postgres["volumes"]
    assert volume == "pgdata:/var/lib/postgresql/data" and "pgdata" in doc["volumes"]
    pg_env = {
        name: interpolate(str(value), {"POSTGRES_PASSWORD": "s3cret"})
        for name, value in postgres["environment"].items()
    }
    check = postgres["healthcheck"]["test"]
    assert (
        check[check.index("-U") + 1] == pg_env["POSTGRES_USER"]
        and check[check.index("-d") + 1] == pg_env["POSTGRES_DB"]
    )
    instance_ids = set()
    for name in REPLICAS:
        replica = services[name]
        assert replica["profiles"] == ["replicas"], name
        for key in ("image", "build", "command", "extra_hosts", "stop_grace_period", "healthcheck", "restart"):
            assert replica[key] == gateway[key], (name, key)
        assert replica["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "mock-lmstudio": {"condition": "service_healthy"},
        }, name
        assert [published(p) for p in replica["ports"]] == [(REPLICA_PORTS[name], "8000")], name
        # the same settings as the default gateway, but the run store in `postgres` and an id of its own
        env = replica["environment"]
        differ = {var for var in {*env, *gateway["environment"]} if env.get(var) != gateway["environment"].get(var)}
        assert differ == {"BRIDGE_DATABASE_URL", "BRIDGE_INSTANCE_ID", "BRIDGE_LEASE_S"}, name
        instance_ids.add(env["BRIDGE_INSTANCE_ID"])
        assert float(env["BRIDGE_LEASE_S"]) == Settings.model_fields["lease_s"].default
        url = make_url(interpolate(env["BRIDGE_DATABASE_URL"], {"POSTGRES_PASSWORD": "s3cret"}))
        assert url.drivername == "postgresql+asyncpg" and (url.host, url.port) == ("postgres", 5432), name
        assert (url.username, url.password, url.database) == (
            pg_env["POSTGRES_USER"],
            pg_env["POSTGRES_PASSWORD"],
            pg_env["POSTGRES_DB"],
        ), name
        # the mcp.json mount, without the SQLite `runs` volume
        assert replica["volumes"] == gateway["volumes"][:1], name
    assert len(instance_ids) == len(REPLICAS), "each replica needs its own BRIDGE_INSTANCE_ID"


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
    assert ops["VOLUME"] == '["/app/data"]' and "chown bridge /app/data" in ops["RUN"], "the run store's volume"
    assert "/config" not in ops["RUN"].split("chown", 1)[1], "the config stays root's: read-only to the runtime user"
    # no installers at run time: the venv's pip and setuptools and the base image's go in their stages
    build = steps[: max(i for i, (op, _) in enumerate(steps) if op == "FROM")]
    assert any(op == "RUN" and "pip uninstall --yes setuptools pip" in a for op, a in build)
    assert "pip uninstall --yes --no-cache-dir pip setuptools wheel" in ops["RUN"]
    assert not any(" uv" in a or "uv==" in a for op, a in steps if op == "RUN")
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
    text = (REPO / "requirements" / "image.lock").read_text(encoding="utf-8")
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    pinned = re.search(r"mcp-server-time==[\w.]+", text)
    assert pinned and pinned.group(0) in pyproject, "the image's time server is the one the tests use"


# --- the compose commands, run as local processes -------------------------------------------------


async def _healthy(
    check: list[str], env: Mapping[str, str], log: Path | None = None, service: Process | None = None
) -> None:
    """Run a compose healthcheck (`CMD python -c ...`) until it passes, like Docker does; on failure the
    service's log (when given) is the message. A `service` process that exits first fails at once."""
    argv = [sys.executable if part == "python" else part for part in check[1:]]

    async def passes() -> bool:
        if service is not None and service.returncode is not None:
            raise AssertionError(f"the service exited with status {service.returncode}")
        process = await asyncio.create_subprocess_exec(
            *argv, env=dict(env), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        return await process.wait() == 0

    try:
        await eventually(passes, START_TIMEOUT_S, f"healthcheck {check} passing", every_s=0.2)
    except AssertionError as error:
        if log is None:
            raise
        raise AssertionError(f"{error}\n{log_tail(str(log))}") from None


@contextlib.asynccontextmanager
async def _process(argv: list[str], env: Mapping[str, str], cwd: Path, log: Path) -> AsyncIterator[Process]:
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


def _base_env() -> dict[str, str]:
    """This process's environment without any setting: only what the compose file sets reaches a service."""
    base = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    return {name: value for name, value in base.items() if name not in setting_names() and not name.startswith("OTEL_")}


@dataclass(frozen=True)
class _Mock:
    """The mock LM Studio's compose command and healthcheck, moved from its compose port to a free one."""

    argv: list[str]
    check: list[str]
    port: str
    compose_port: str


def _mock(services: Mapping[str, Any]) -> _Mock:
    mock = services["mock-lmstudio"]
    port = str(free_port())
    argv = list(mock["command"])
    argv[argv.index("--host") + 1] = "127.0.0.1"
    compose_port = argv[argv.index("--port") + 1]
    argv[argv.index("--port") + 1] = port
    check = [part.replace(f":{compose_port}/", f":{port}/") for part in mock["healthcheck"]["test"]]
    return _Mock(_local(argv), check, port, compose_port)


def _gateway_env(service: Mapping[str, Any], mock: _Mock) -> tuple[dict[str, str], str]:
    """A gateway service's environment, interpolated with compose's defaults, on a free loopback port,
    with the mock's host name replaced by 127.0.0.1 and the mcp.json mount by its source file; and the port."""
    env = {name: interpolate(str(value), {}) for name, value in service["environment"].items()}
    port = str(free_port())
    env["BRIDGE_HOST"], env["BRIDGE_PORT"] = "127.0.0.1", port
    env["LMSTUDIO_BASE_URL"] = env["LMSTUDIO_BASE_URL"].replace(
        f"mock-lmstudio:{mock.compose_port}", f"127.0.0.1:{mock.port}"
    )
    source, target, _ = interpolate(service["volumes"][0], {}).rsplit(":", 2)
    assert env["MCP_CONFIG"] == target
    env["MCP_CONFIG"] = str(REPO / source)  # the mount, without a container
    return env, port


@pytest.mark.timeout(180)
async def test_compose_commands_run_and_become_healthy(tmp_path: Path) -> None:
    services = compose()["services"]
    base = _base_env()
    mock = _mock(services)
    gateway = services["gateway"]
    env, port = _gateway_env(gateway, mock)
    gateway_env = {**base, **env}
    log = tmp_path / "gateway.log"

    async with _process(mock.argv, base, REPO, tmp_path / "mock.log") as mock_process:
        await _healthy(mock.check, base, tmp_path / "mock.log", mock_process)  # depends_on: service_healthy
        async with _process(_local(gateway["command"]), gateway_env, tmp_path, log) as proc:
            await _healthy(gateway["healthcheck"]["test"], gateway_env, log, proc)
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
            assert await asyncio.wait_for(proc.wait(), 40) == 0, log.read_text()[-3000:]


async def _stored_run(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """The run's record as `client`'s gateway reads it from the shared store, once the run has ended (404
    while the executing replica has not committed it yet)."""

    async def ended() -> dict[str, Any] | None:
        response = await client.get(f"/v1/runs/{run_id}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        record = dict(response.json())
        return record if record["status"] in FINISHED_STATUSES else None

    return dict(await eventually(ended, 30, f"run {run_id} ended, read through {client.base_url}"))


@pytest.mark.timeout(240)
async def test_replicas_profile_runs_and_shares_one_run_store(
    tmp_path: Path, postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    services = compose()["services"]
    base = _base_env()
    mock = _mock(services)

    # `postgres`: the throwaway cluster stands in for the service (its user; a fresh database), and the
    # service's own healthcheck, pointed at it, decides when it is healthy
    postgres = services["postgres"]
    pg_env = {name: interpolate(str(value), {}) for name, value in postgres["environment"].items()}
    database = make_url(postgres_url)
    assert database.username == pg_env["POSTGRES_USER"] and database.host == "127.0.0.1"
    assert database.port is not None and database.database is not None
    pg_isready = find_pg_bin("pg_isready")
    assert pg_isready is not None, "pg_isready comes with the PostgreSQL binaries the cluster uses"
    check = list(postgres["healthcheck"]["test"])
    check[1] = pg_isready
    check[check.index("-d") + 1] = database.database
    pg_check = [*check, "-h", "127.0.0.1", "-p", str(database.port)]

    # gateway-a and gateway-b: their compose environment, the database host moved to the cluster
    replicas: dict[str, tuple[dict[str, str], str]] = {}
    for name in REPLICAS:
        env, port = _gateway_env(services[name], mock)
        url = make_url(env["BRIDGE_DATABASE_URL"])
        assert (url.host, url.port, url.database) == ("postgres", 5432, pg_env["POSTGRES_DB"]), name
        local = url.set(host="127.0.0.1", port=database.port, database=database.database)
        env["BRIDGE_DATABASE_URL"] = local.render_as_string(hide_password=False)
        replicas[name] = ({**base, **env}, port)

    async with contextlib.AsyncExitStack() as stack:
        await _healthy(pg_check, base)
        mock_process = await stack.enter_async_context(_process(mock.argv, base, REPO, tmp_path / "mock.log"))
        await _healthy(mock.check, base, tmp_path / "mock.log", mock_process)
        processes: dict[str, Process] = {}
        for name, (env, _) in replicas.items():  # started together: one migrates, the other waits for its lock
            (tmp_path / name).mkdir()
            argv = _local(services[name]["command"])
            log = tmp_path / f"{name}.log"
            processes[name] = await stack.enter_async_context(_process(argv, env, tmp_path / name, log))
        await asyncio.gather(
            *(
                _healthy(services[n]["healthcheck"]["test"], env, tmp_path / f"{n}.log", processes[n])
                for n, (env, _) in replicas.items()
            )
        )
        clients = {
            name: await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60))
            for name, (_, port) in replicas.items()
        }
        for client in clients.values():
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text

        # a run started on one replica is read, finished, from the other; the store says who ran it
        connection = await asyncpg.connect(postgres_cluster.dsn_for(database.database))
        stack.push_async_callback(connection.close)
        for source, reader in (REPLICAS, REPLICAS[::-1]):
            accepted = await clients[source].post("/v1/runs", json={"task": f"What time is it? {SCRIPT}"})
            assert accepted.status_code == 202, accepted.text
            run_id = accepted.json()["run_id"]
            record = await _stored_run(clients[reader], run_id)
            assert record["status"] == "completed", record
            assert [step["tool"] for step in record["steps"]] == ["get_current_time"]
            listed = (await clients[reader].get("/v1/runs")).json()
            assert run_id in [run["run_id"] for run in listed["data"]]
            instance = await connection.fetchval("SELECT instance FROM runs WHERE run_id = $1", run_id)
            assert instance == replicas[source][0]["BRIDGE_INSTANCE_ID"] == source

        for name, process in processes.items():  # `docker compose stop`: each exits cleanly
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 40) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
