"""Shared fixtures: a real mock LM Studio process, settings pointing at it, the gateway as a client.

A test module's gateway (`bridge` in-process, `live` behind a real socket) runs on the shared mock with
the real MCP servers of tests/helpers.py; a module tunes it by overriding `mcp_extra` (more or changed
mcp.json entries), `gateway_settings` (settings on top) or `mcp_json` (a whole other mcp.json).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from app.main import create_app
from app.settings import Settings
from app.telemetry import (
    LEAN_RECORDS,
    QUIET_LOGGERS,
    UVICORN_LOGGERS,
    JSONFormatter,
    WhileExporting,
    export_spans,
    exporting,
    tracer_provider,
)
from tests.helpers import write_mcp_json
from tests.mock_lmstudio.fixture import MockLMStudio, start_mock
from tests.postgres import PostgresCluster, PostgresNotFound
from tests.processes import serve_in_loop

CLIENT_TIMEOUT_S = 60.0
SLOW_SHUTDOWN_S = 20.0  # an in-process app that takes longer to stop has its stacks printed
HELLO = "hello from the filesystem server"


@pytest.fixture(scope="session")
async def mock_server() -> AsyncIterator[MockLMStudio]:
    mock = await start_mock()
    yield mock
    await mock.stop()


@pytest.fixture
async def mock(mock_server: MockLMStudio) -> MockLMStudio:
    """The shared mock LM Studio, reset before each test."""
    await mock_server.reset()
    return mock_server


_STORES = tempfile.TemporaryDirectory(prefix="bridge-test-stores-")


def store_url() -> str:
    """A fresh SQLite run store in the session's temporary directory."""
    return f"sqlite+aiosqlite:///{_STORES.name}/runs-{uuid.uuid4().hex[:12]}.db"


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: no .env file, fast retries, no MCP config unless given, a fresh run store."""
    values: dict[str, Any] = {
        "lmstudio_retry_backoff_s": 0.01,
        "lmstudio_retry_backoff_max_s": 0.05,
        "database_url": store_url(),
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@contextlib.asynccontextmanager
async def app_client(settings: Settings, **client_kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to a fully started app (lifespan run) in-process (a busy machine's timeout unless
    the caller sets one: a run's first tool call starts its MCP server)."""
    client_kwargs.setdefault("timeout", CLIENT_TIMEOUT_S)
    app = create_app(settings)
    report: asyncio.TimerHandle | None = None
    try:
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bridge", **client_kwargs) as client:
                yield client
            report = asyncio.get_running_loop().call_later(SLOW_SHUTDOWN_S, dump_stacks, "the app's stop is slow")
    finally:
        if report is not None:
            report.cancel()


def dump_stacks(why: str) -> None:
    """Every task's and thread's stack on stderr (pytest shows it with the failure): what a stop waits for."""
    print(f"--- {why}: asyncio tasks ---", file=sys.stderr)
    for task in asyncio.all_tasks():
        task.print_stack(limit=12, file=sys.stderr)
    print(f"--- {why}: threads ---", file=sys.stderr)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)


@contextlib.asynccontextmanager
async def served(settings: Settings, **client_kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app behind a real uvicorn server on a free port (in this event loop); a client for it (timeout as
    `app_client`'s). The client drops idle connections before uvicorn does (5 s): a request on a connection the
    server is closing just then fails with ReadError (seen under load)."""
    client_kwargs.setdefault("timeout", CLIENT_TIMEOUT_S)
    client_kwargs.setdefault("limits", httpx.Limits(keepalive_expiry=2.0))
    async with (
        serve_in_loop(create_app(settings), "the gateway", CLIENT_TIMEOUT_S) as url,
        httpx.AsyncClient(base_url=url, **client_kwargs) as client,
    ):
        yield client


@pytest.fixture
async def client(mock: MockLMStudio) -> AsyncIterator[httpx.AsyncClient]:
    """An app client whose LM Studio is the shared mock."""
    async with app_client(make_settings(lmstudio_base_url=mock.base_url)) as c:
        yield c


# --- a test module's gateway with real MCP servers ---------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's files directory (the filesystem server's root), with hello.txt in it."""
    root = tmp_path_factory.mktemp("files")
    (root / "hello.txt").write_text(HELLO)
    return root


@pytest.fixture(scope="module")
def mcp_extra() -> dict[str, dict[str, Any]]:
    """mcp.json entries a module adds, or merges into the real servers' entries (override it)."""
    return {}


@pytest.fixture(scope="module")
def mcp_json(files: Path, mcp_extra: dict[str, dict[str, Any]]) -> Path:
    """The module's mcp.json: the real servers (tests/helpers.py) plus `mcp_extra`."""
    return write_mcp_json(files.parent / "mcp.json", str(files), **mcp_extra)


@pytest.fixture(scope="module")
def gateway_settings() -> dict[str, Any]:
    """Settings of the module's gateway on top of the mock and `mcp_json` (override it)."""
    return {}


@pytest.fixture(scope="module")
def settings(mock_server: MockLMStudio, mcp_json: Path, gateway_settings: dict[str, Any]) -> Settings:
    values = {"lmstudio_base_url": mock_server.base_url, "mcp_config": str(mcp_json), **gateway_settings}
    return make_settings(**values)


@pytest.fixture(scope="module")
def fresh_store(settings: Settings, request: pytest.FixtureRequest) -> Callable[[], str]:
    """Makes a new, empty run store of the kind the module's settings use (SQLite or PostgreSQL)."""
    kind = "sqlite" if settings.database_url.startswith("sqlite") else "postgres"
    return lambda: new_store(kind, request)


def own_gateway(settings: Settings, fresh_store: Callable[[], str], name: str) -> Settings:
    """`settings` with a run store and an instance id of one gateway's own: two gateways of a module never
    share a store or fight over its lease."""
    return settings.model_copy(update={"database_url": fresh_store(), "instance_id": f"{name}-{uuid.uuid4().hex[:8]}"})


@pytest.fixture(scope="module")
async def mock_as_found(mock_server: MockLMStudio) -> MockLMStudio:
    """The shared mock reset before a module's gateway first reads it: a test of an earlier module may have left
    it configured (a 64-token window: the module's gateway would remember it)."""
    await mock_server.reset()
    return mock_server


@pytest.fixture(scope="module")
async def bridge(
    settings: Settings, fresh_store: Callable[[], str], mock_as_found: MockLMStudio
) -> AsyncIterator[httpx.AsyncClient]:
    """The module's gateway in-process (ASGITransport, lifespan run), on its own store."""
    async with app_client(own_gateway(settings, fresh_store, "bridge"), timeout=CLIENT_TIMEOUT_S) as client:
        yield client


@pytest.fixture(scope="module")
async def live(
    settings: Settings, fresh_store: Callable[[], str], mock_as_found: MockLMStudio
) -> AsyncIterator[httpx.AsyncClient]:
    """The module's gateway behind a real uvicorn socket (ASGITransport buffers whole responses), on its own
    store."""
    async with served(own_gateway(settings, fresh_store, "live"), timeout=CLIENT_TIMEOUT_S) as client:
        yield client


# --- process-wide tracing state ------------------------------------------------------------------------


def span_export_state() -> tuple[bool, tuple[SpanProcessor, ...]]:
    """Whether the process's tracer provider records spans, and the span processors it sends them to."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return False, ()
    # the SDK has no public way to list or remove processors
    return exporting(provider), provider._active_span_processor._span_processors


@contextlib.contextmanager
def spans_exported(processor: SpanProcessor) -> Iterator[None]:
    """Span export on for the process (gateways built inside record their spans and send LM Studio calls
    through the traced httpx path), then off again: the processor removed, recording stopped."""
    provider = tracer_provider(make_settings())
    before = span_export_state()
    export_spans(provider, processor)
    try:
        yield
    finally:
        multi = provider._active_span_processor
        with multi._lock:
            multi._span_processors = tuple(p for p in multi._span_processors if p is not processor)
        processor.shutdown()
        sampler = provider.sampler
        assert isinstance(sampler, WhileExporting)
        sampler.recording = before[0]
        assert span_export_state() == before


@pytest.fixture(autouse=True)
def logging_left_as_found() -> Iterator[None]:
    """What `configure_logging` changes for the whole process (a CLI command run in-process calls it), undone
    after the test: its JSON handler on the root, the levels and handlers of the loggers it sets, the record
    fields it turns off. pytest's own capture handlers on the root are left alone."""
    root = logging.getLogger()
    named = [logging.getLogger(name) for name in (*UVICORN_LOGGERS, *QUIET_LOGGERS)]
    saved = [(logger, logger.level, logger.handlers[:], logger.propagate) for logger in named]
    root_level, root_handlers = root.level, root.handlers[:]
    flags = {name: getattr(logging, name) for name in LEAN_RECORDS}
    yield
    for handler in root.handlers[:]:
        if isinstance(handler.formatter, JSONFormatter) and handler not in root_handlers:
            root.removeHandler(handler)
    root.setLevel(root_level)
    for logger, level, handlers, propagate in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate
    for name, value in flags.items():
        setattr(logging, name, value)


@pytest.fixture(scope="module", autouse=True)
def span_export_left_off() -> Iterator[None]:
    """Every module leaves span export off: the rest of the suite runs the production default, where LM
    Studio calls read whole go straight on aiohttp (services/lmstudio/wire.py), not through httpx."""
    yield
    exporting_now, processors = span_export_state()
    assert not exporting_now and not processors, (
        f"span export is on for the process after this module (processors: {processors}): a test turned it on "
        "without `spans_exported`, or OTEL_EXPORTER_OTLP_ENDPOINT / BRIDGE_OTEL_CONSOLE is set where pytest runs"
    )


# --- a throwaway PostgreSQL cluster (tests/postgres.py) ---------------------------------------------


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster for the session, started when a test first asks for it; fails (does not skip)
    when the PostgreSQL binaries are missing."""
    cluster = PostgresCluster()
    missing = ""
    try:
        cluster.start()
    except PostgresNotFound as error:
        missing = str(error)  # says to install Debian's `postgresql` package
    if missing:
        pytest.fail(missing, pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


# --- run stores of each kind: the one parametrisation over SQLite and PostgreSQL ----------------------

STORE_KINDS = ("sqlite", "postgres")


def new_store(kind: str, request: pytest.FixtureRequest) -> str:
    """The URL of a fresh, empty run store of `kind`: a SQLite file in the session's directory, or a database
    of the session's PostgreSQL cluster (started when first asked for)."""
    if kind == "sqlite":
        return store_url()
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.new_database(f"test_{uuid.uuid4().hex[:16]}")


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """The SQLAlchemy URL (postgresql+asyncpg://...) of a fresh, empty database of the session's cluster."""
    return postgres_cluster.new_database(f"test_{uuid.uuid4().hex[:16]}")


@pytest.fixture(params=STORE_KINDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh run store of each kind: every test asking for it runs on SQLite and on PostgreSQL."""
    return new_store(request.param, request)


@pytest.fixture(scope="module", params=STORE_KINDS)
def either_store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings of a fresh run store of each kind: a module whose `gateway_settings` returns these runs
    every test on SQLite and on PostgreSQL."""
    return {"database_url": new_store(request.param, request)}
