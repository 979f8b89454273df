"""The one builder of the gateway's parts, used by the app's lifespan, `lmstudio-bridge check` and the
stdio MCP mode: every shared object built once from the settings and closed in reverse order."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from app.oauth_setup import build_oauth, without_token_key
from app.settings import Settings
from app.telemetry import instrument_client, secrets_of
from services.access import KeyRing, KeysFileError
from services.agent import AgentService, ApprovalPolicy, RunDefaults
from services.agent.aids import AidProfiles, Aids
from services.breaker import Breaker
from services.context.fit import ContextPolicy
from services.errors import MCPConfigError, UpstreamUnavailableError, redacting
from services.evals import EvalRunner, EvalService, EvalStore
from services.evals.routing import ScoreRouting
from services.limits import RunLimiter
from services.lmstudio import (
    HostsFileError,
    HostSpec,
    LMStudioHosts,
    ModelCatalog,
    RetryPolicy,
    counts_against_lmstudio,
    host_specs,
)
from services.lmstudio.client import ModelErrorHook
from services.mcp import MCPPool, MCPServerConfig, find_config_path, guard_recursion, load_mcp_config
from services.mcp.oauth import OAuthClients
from services.metrics import Metrics, StateReader
from services.openai_compat import OpenAICompat
from services.runs import RunService, RunStore, sqlite_path
from services.status import StatusService
from services.text import Redactor

log = logging.getLogger("lmstudio_bridge")


@dataclass(frozen=True, slots=True)
class MCPSetup:
    path: Path | None
    servers: dict[str, MCPServerConfig]

    def secret_values(self) -> list[str]:
        """MCP env and header values and OAuth client secrets: never logged."""
        values = [v for cfg in self.servers.values() for v in (*cfg.env.values(), *cfg.headers.values())]
        return values + [c.oauth.client_secret for c in self.servers.values() if c.oauth and c.oauth.client_secret]


def load_mcp_setup(settings: Settings) -> MCPSetup:
    """Find and parse mcp.json; raises MCPConfigError naming the server and field."""
    path = find_config_path(settings.mcp_config, Path.cwd(), Path.home())
    servers = guard_recursion(load_mcp_config(path, os.environ), settings.host, settings.port)
    if not settings.token_key:  # OAuth tokens are kept only sealed
        servers = {name: without_token_key(cfg) for name, cfg in servers.items()}
    for cfg in servers.values():
        if cfg.is_bridge:
            log.warning("MCP server %r skipped: it is lmstudio-bridge itself (recursion guard)", cfg.name)
        if cfg.unusable:
            log.warning("MCP server %r disabled: %s", cfg.name, cfg.unusable)
    return MCPSetup(path, servers)


def load_keys(settings: Settings, *, exit_on_error: bool = True) -> KeyRing:
    """BRIDGE_API_KEYS and the keys file; a broken file stops start-up naming the entry and the field."""
    try:
        return KeyRing.build([k.get_secret_value() for k in settings.api_keys], settings.keys_file)
    except KeysFileError as exc:
        if not exit_on_error:
            raise
        print(f"Invalid keys file (BRIDGE_KEYS_FILE): {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def load_mcp(settings: Settings) -> MCPSetup:
    """mcp.json; an invalid file stops start-up with a message naming server and field."""
    try:
        return load_mcp_setup(settings)
    except MCPConfigError as exc:
        print(f"Invalid MCP configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


@dataclass(slots=True)
class BridgeState:
    """Everything a request, a CLI command or an MCP tool call shares."""

    settings: Settings
    lmstudio: LMStudioHosts
    catalog: ModelCatalog
    pool: MCPPool
    mcp_config_path: Path | None
    limiter: RunLimiter
    agent: AgentService
    compat: OpenAICompat
    status: StatusService
    keys: KeyRing
    store: RunStore
    runs: RunService
    evals: EvalService
    metrics: Metrics


def load_hosts(settings: Settings, *, exit_on_error: bool = True) -> list[HostSpec]:
    """The LM Studio hosts: LMSTUDIO_HOSTS_FILE, else LMSTUDIO_BASE_URLS, else LMSTUDIO_BASE_URL; a broken hosts
    file stops start-up naming the entry and the field."""
    token = settings.lmstudio_api_token.get_secret_value() if settings.lmstudio_api_token else None
    try:
        return host_specs(settings.lmstudio_base_url, settings.lmstudio_base_urls, settings.lmstudio_hosts_file, token)
    except HostsFileError as exc:
        if not exit_on_error:
            raise
        print(f"Invalid hosts file (LMSTUDIO_HOSTS_FILE): {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def build_lmstudio(
    settings: Settings,
    metrics: Metrics,
    hosts: list[HostSpec] | None = None,
    on_model_error: ModelErrorHook | None = None,
) -> LMStudioHosts:
    specs = hosts if hosts is not None else load_hosts(settings)

    def breaker(spec: HostSpec) -> Breaker:
        return Breaker(
            "LM Studio" if len(specs) == 1 else f"LM Studio host {spec.name!r}",
            failures=settings.breaker_failures,
            reset_s=settings.breaker_reset_s,
            counts=counts_against_lmstudio,
            unavailable=lambda detail, wait: UpstreamUnavailableError(detail, retry_after=wait),
        )

    return LMStudioHosts.create(
        specs,
        breaker=breaker,
        connect_timeout_s=settings.lmstudio_connect_timeout_s,
        read_timeout_s=settings.lmstudio_read_timeout_s,
        max_connections=settings.lmstudio_max_connections,
        retry=RetryPolicy(
            settings.lmstudio_retries, settings.lmstudio_retry_backoff_s, settings.lmstudio_retry_backoff_max_s
        ),
        metrics=metrics,
        on_model_error=on_model_error,
    )


def build_pool(
    settings: Settings, servers: dict[str, MCPServerConfig], metrics: Metrics, oauth: OAuthClients | None = None
) -> MCPPool:
    return MCPPool(
        servers,
        call_timeout_s=settings.mcp_call_timeout_s,
        progress_max_s=settings.mcp_progress_max_s,
        start_timeout_s=settings.mcp_start_timeout_s,
        idle_s=settings.mcp_idle_s,
        max_concurrency=settings.mcp_max_concurrency,
        breaker_failures=settings.breaker_failures,
        breaker_reset_s=settings.breaker_reset_s,
        metrics=metrics,
        capture_content=settings.otel_capture_content,
        oauth=oauth,
    )


def all_secrets(settings: Settings, mcp: MCPSetup, hosts: list[HostSpec]) -> list[str]:
    """Every value that must never reach a log line or the run store: the settings' keys, token and database
    password, mcp.json's env and header values, the hosts file's tokens. The keys file's keys come from the
    key ring (`KeyRing.secrets`), as reloads bring them."""
    tokens = [h.token for h in hosts if h.token]
    return secrets_of(settings, [*mcp.secret_values(), *tokens])


async def open_store(settings: Settings, metrics: Metrics, redact: Redactor) -> RunStore:
    """The run store at BRIDGE_DATABASE_URL (its SQLite directory made when missing)."""
    path = sqlite_path(settings.database_url)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return await RunStore.open(
        settings.database_url,
        instance=settings.instance_id,
        metrics=metrics,
        redact=redact,
        retention_days=settings.run_retention_days,
        lease_s=settings.lease_s,
        orphan_grace_s=settings.orphan_grace_s,
    )


def build_evals(
    settings: Settings,
    metrics: Metrics,
    store: RunStore,
    agent: AgentService,
    scores: dict[str, float],
    oauth: OAuthClients | None = None,
) -> EvalService:
    """The eval service: its runs go through an agent service like the gateway's, over the eval's own servers."""
    runner = EvalRunner(lambda servers: build_pool(settings, servers, metrics, oauth), agent.over)
    return EvalService(
        runner,
        EvalStore(store.engine, settings.instance_id),
        agent.ctx.catalog,
        seed=settings.eval_seed,
        temperature=settings.eval_temperature,
        scores=scores,
    )


def _breaker_states(lmstudio: LMStudioHosts, pool: MCPPool) -> dict[str, str]:
    return lmstudio.breaker_states() | {f"mcp:{s.name}": s.breaker for s in pool.status()}


@asynccontextmanager
async def open_gateway(
    settings: Settings,
    mcp: MCPSetup,
    *,
    metrics: Metrics | None = None,
    tracer_provider: TracerProvider | None = None,
    warmup: bool | None = None,
    keys: KeyRing | None = None,
    hosts: list[HostSpec] | None = None,
) -> AsyncIterator[BridgeState]:
    """Build every part once; on exit close them in reverse order (MCP servers stop, clients close)."""
    metrics = metrics or Metrics()
    keys = keys or load_keys(settings)
    hosts = hosts if hosts is not None else load_hosts(settings)
    redact = Redactor(all_secrets(settings, mcp, hosts), more=keys.secrets)  # with the keys a reload brings
    async with AsyncExitStack() as stack:
        stack.enter_context(redacting(redact))  # every error's detail, hence every problem, event and chat error
        catalog, lmstudio = ModelCatalog.over(
            lambda on_model_error: build_lmstudio(settings, metrics, hosts, on_model_error),
            ttl_s=settings.model_cache_ttl_s,
            default_model=settings.default_model,
            aliases=settings.model_aliases,
            default_window=settings.context_default_tokens,
        )
        stack.push_async_callback(lmstudio.aclose)
        if tracer_provider is not None:
            for client in lmstudio.clients:
                instrument_client(client, tracer_provider)
            stack.callback(tracer_provider.force_flush)
        store = await open_store(settings, metrics, redact)  # before the pool: it keeps OAuth tokens
        stack.push_async_callback(store.aclose)
        oauth = build_oauth(settings, mcp.servers, store.engine)
        await oauth.check(mcp.servers)
        pool = build_pool(settings, mcp.servers, metrics, oauth)
        stack.push_async_callback(pool.aclose)
        await pool.start(warmup=settings.mcp_warmup if warmup is None else warmup)
        limiter = RunLimiter(settings.max_concurrent_runs, settings.queue_timeout_s)
        defaults = RunDefaults(
            max_rounds=settings.max_rounds_default,
            run_timeout_s=settings.run_timeout_s,
            tool_output_max_chars=settings.tool_output_max_chars,
            load_timeout_s=settings.lmstudio_load_timeout_s,
            max_tokens=settings.max_tokens_default,
            repeat_call_limit=settings.repeat_call_limit,
            text_tool_calls=settings.text_tool_calls,
            capture_content=settings.otel_capture_content,
            approval_timeout_s=settings.approval_timeout_s,
            aids=AidProfiles(
                Aids(settings.aid_nudge, settings.aid_repair, settings.aid_loop_hint),
                {model: Aids.of(names) for model, names in settings.aid_profiles.items()},
            ),
            context=ContextPolicy(
                answer_share=settings.context_answer_share,
                tools_share=settings.context_tools_share,
                margin_share=settings.context_margin_share,
            ),
        )
        approvals = ApprovalPolicy.of(
            settings.approval_tools, {name: cfg.approval_tools for name, cfg in mcp.servers.items()}
        )
        if store.engine.dialect.name == "postgresql":  # several processes: a key's limits are counted in the store
            from services.runs.key_limits import StoreKeyLimits  # (SQLAlchemy's PostgreSQL dialect: only here)

            shared = StoreKeyLimits(store.engine, store.instance, metrics)
            await shared.start()
            stack.callback(setattr, keys, "limits", keys.limits)  # back to counting here once the store is closed
            stack.push_async_callback(shared.aclose)
            keys.limits = shared
        scores: dict[str, float] = {}  # each model's newest tool_score, kept by the eval service
        pick = ScoreRouting(catalog, scores).pick if settings.route_by_score else None
        agent = AgentService(
            lmstudio, catalog, pool, limiter, defaults, metrics, approvals, keys, store.journal, pick_model=pick
        )
        runs = RunService(agent, store, settings.max_queued_runs)
        stack.push_async_callback(runs.aclose)
        evals = build_evals(settings, metrics, store, agent, scores, oauth)
        await evals.start()
        stack.push_async_callback(evals.aclose)
        metrics.watch(
            StateReader(
                runs_in_flight=lambda: limiter.in_flight,
                runs_rejected=lambda: limiter.rejected,
                live_sessions=pool.live_sessions,
                cache_hits=lambda: catalog.hits,
                cache_misses=lambda: catalog.misses,
                runs_queued=lambda: runs.queued,
                store_backlog=lambda: store.backlog,
                breakers=lambda: _breaker_states(lmstudio, pool),
                lmstudio_in_flight=lmstudio.in_flight,
            )
        )
        yield BridgeState(
            settings=settings,
            lmstudio=lmstudio,
            catalog=catalog,
            pool=pool,
            mcp_config_path=mcp.path,
            limiter=limiter,
            agent=agent,
            compat=OpenAICompat(lmstudio, catalog, agent),
            status=StatusService(lmstudio, catalog, pool, limiter, mcp.path, store.health, evals.scores),
            keys=keys,
            store=store,
            runs=runs,
            evals=evals,
            metrics=metrics,
        )
