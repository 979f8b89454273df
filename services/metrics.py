"""Prometheus metrics, in a registry of their own (one per app), recorded by the services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
ROUND_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100)
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}

M = TypeVar("M", bound=MetricWrapperBase)


class Metrics:
    """Every metric the gateway exports (docs/operations.md lists them)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # the standard process_* metrics (CPU, memory, open fds, start time)
        self.http_requests = Counter(
            "bridge_http_requests_total",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "bridge_http_request_duration_seconds",
            "HTTP request duration",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.runs = Counter("bridge_runs_total", "Finished runs by status", ["status"], registry=r)
        self.run_duration = Histogram(
            "bridge_run_duration_seconds", "Run duration by status", ["status"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.run_rounds = Histogram(
            "bridge_run_rounds", "Tool rounds per run by status", ["status"], buckets=ROUND_BUCKETS, registry=r
        )
        self.tool_calls = Counter(
            "bridge_tool_calls_total",
            "MCP tool calls by server, tool and outcome (ok, tool_error, timeout, unavailable, not_found, error)",
            ["server", "tool", "outcome"],
            registry=r,
        )
        self.tool_timeouts = Counter(
            "bridge_tool_timeouts_total",
            "MCP tool calls cut by a timeout, by server, tool and limit (timeout: no answer or progress in time; "
            "hard_max: progress went on past BRIDGE_MCP_PROGRESS_MAX_S)",
            ["server", "tool", "limit"],
            registry=r,
        )
        self.tool_progress_resets = Counter(
            "bridge_tool_progress_resets_total",
            "Progress notifications that reset an MCP tool call's timeout, by server and tool",
            ["server", "tool"],
            registry=r,
        )
        self.context_fits = Counter(
            "bridge_context_fits_total",
            "Requests fitted to a model's context window, by action (tools, output, history, window, exceeded)",
            ["action"],
            registry=r,
        )
        self.text_tool_calls = Counter(
            "bridge_text_tool_calls_recovered_total",
            "Tool calls a model wrote as text and the gateway recovered, by format",
            ["format"],
            registry=r,
        )
        self.tool_duration = Histogram(
            "bridge_tool_call_duration_seconds",
            "MCP tool call latency",
            ["server", "tool"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lmstudio_duration = Histogram(
            "bridge_lmstudio_request_duration_seconds",
            "LM Studio call latency (retries included) by operation, outcome and host",
            ["operation", "outcome", "host"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lmstudio_retries = Counter(
            "bridge_lmstudio_retries_total",
            "Retried LM Studio calls by the error that caused the retry and host",
            ["reason", "host"],
            registry=r,
        )
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}
        self.tokens = Counter(
            "bridge_tokens_total",
            "Tokens reported by LM Studio by model and direction (input, output)",
            ["model", "direction"],
            registry=r,
        )

        self.key_runs = Counter(
            "bridge_key_runs_total", "Finished runs by API key name and status", ["key", "status"], registry=r
        )
        self.key_tool_calls = Counter(
            "bridge_key_tool_calls_total", "Tool calls of runs by API key name", ["key"], registry=r
        )
        self.store_errors = Counter(
            "bridge_store_errors_total", "Failed run store operations (writes, pruning)", registry=r
        )
        self.store_dropped = Counter(
            "bridge_store_writes_dropped_total",
            "Run store writes lost (the database failed or fell behind); those runs are marked incomplete",
            registry=r,
        )

        self.relayed = Counter(
            "bridge_relayed_total",
            "Cancel requests and approval decisions between gateway processes sharing a store, by kind (cancel, "
            "approval) and direction (sent: recorded for another process; received: acted on here)",
            ["kind", "direction"],
            registry=r,
        )
        self.claims = Counter(
            "bridge_claims_total",
            "Runs of other gateway processes marked interrupted here, by reason (lease: the process stopped "
            "heartbeating; orphan: its process left no instance row)",
            ["reason"],
            registry=r,
        )
        self.leases_lost = Counter(
            "bridge_leases_lost_total",
            "Times this process found its lease taken over (it stalled for a whole lease, or shares its instance id)",
            registry=r,
        )
        self.maintenance = Counter(
            "bridge_maintenance_total",
            "Maintenance rounds by task (claim, prune) and outcome (done; skipped: another process held the lock)",
            ["task", "outcome"],
            registry=r,
        )
        self.key_limit_checks = Counter(
            "bridge_key_limit_checks_total",
            "Per-key limit checks made in the shared store, by limit (requests, runs) and outcome (allowed, "
            "limited, unavailable)",
            ["limit", "outcome"],
            registry=r,
        )
        self.key_limit_duration = Histogram(
            "bridge_key_limit_check_duration_seconds",
            "Duration of a per-key limit check in the shared store",
            ["limit"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def child(self, metric: M, *labels: str) -> M:
        """`metric.labels(*labels)`, bound once per metric and label values: `labels()` takes a lock and a lookup
        on every call, and the hot paths count every request, run and call. The callers keep their label values
        bounded, as they must for Prometheus anyway (which keeps every child it made)."""
        key = (metric, labels)
        bound = self._children.get(key)
        if bound is None:
            bound = self._children[key] = metric.labels(*labels)
        return cast(M, bound)  # the child of `metric` (keyed by it) is of its type

    def watch(self, state: StateReader) -> None:
        """Export values the services keep themselves (read at scrape time)."""
        self.registry.register(_StateCollector(state))


@dataclass
class StateReader:
    """Callables the state collector reads at scrape time."""

    runs_in_flight: Callable[[], int] = lambda: 0
    runs_rejected: Callable[[], int] = lambda: 0
    live_sessions: Callable[[], int] = lambda: 0
    cache_hits: Callable[[], int] = lambda: 0
    cache_misses: Callable[[], int] = lambda: 0
    runs_queued: Callable[[], int] = lambda: 0
    store_backlog: Callable[[], int] = lambda: 0
    breakers: Callable[[], dict[str, str]] = field(default=lambda: {})
    lmstudio_in_flight: Callable[[], dict[str, int]] = field(default=lambda: {})


class _StateCollector(Collector):
    def __init__(self, state: StateReader) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        s = self.state
        yield GaugeMetricFamily("bridge_runs_in_flight", "Runs in progress", value=s.runs_in_flight())
        yield CounterMetricFamily("bridge_runs_rejected", "Runs refused with 429 overloaded", value=s.runs_rejected())
        yield GaugeMetricFamily("bridge_runs_queued", "Runs of POST /v1/runs waiting for a slot", value=s.runs_queued())
        yield GaugeMetricFamily(
            "bridge_store_backlog", "Run store writes queued, not yet committed", value=s.store_backlog()
        )
        yield GaugeMetricFamily("bridge_mcp_sessions_live", "Open MCP sessions", value=s.live_sessions())
        yield CounterMetricFamily("bridge_model_cache_hits", "Model list cache hits", value=s.cache_hits())
        yield CounterMetricFamily("bridge_model_cache_misses", "Model list cache misses", value=s.cache_misses())
        breaker = GaugeMetricFamily(
            "bridge_breaker_state",
            "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open",
            labels=["upstream"],
        )
        for upstream, state in s.breakers().items():
            breaker.add_metric([upstream], BREAKER_VALUES[state])
        yield breaker
        in_flight = GaugeMetricFamily(
            "bridge_lmstudio_in_flight", "LM Studio calls (and open streams) in progress per host", labels=["host"]
        )
        for host, count in s.lmstudio_in_flight().items():
            in_flight.add_metric([host], count)
        yield in_flight
