"""Routing over several LM Studio hosts: what the routing decision (`routing.rank`) costs per LLM call with 1, 3
and 8 hosts, and the whole per-call overhead of `LMStudioHosts._routed` (rank, in-flight accounting, the
failover loop) around a trivial awaited call, against awaiting the call directly."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from app.gateway import build_lmstudio
from app.settings import Settings
from bench.common import Row, verdict
from services.lmstudio.client import LMStudioClient
from services.lmstudio.listing import ModelInfo
from services.lmstudio.routing import Host, rank
from services.lmstudio.upstream import LMStudioHosts
from services.metrics import Metrics

CALLS = 20_000  # calls per timing
REPEATS = 9  # timings per case, the cases interleaved; the median is reported, with the spread
TARGET_US = 5.0
COMMAND = ".venv/bin/python -m bench routing"

# (model, {host index: loaded}) for 3 hosts: every model on 1 or 2 of them, some loaded, some not
THREE_HOSTS: list[tuple[str, dict[int, bool]]] = [
    ("qwen/qwen3-4b", {0: True, 1: False}),
    ("google/gemma-3-12b", {1: True}),
    ("openai/gpt-oss-20b", {2: False}),
    ("mistralai/mistral-small-3.2", {0: False, 2: True}),
    ("qwen/qwen3-30b-a3b", {1: True, 2: True}),
    ("text-embedding-nomic-embed-text-v1.5", {0: True}),
]
EIGHT_HOSTS_MODELS = 12  # each on 2 to 4 of the 8 hosts, loaded on about half of them
EVERYWHERE = "qwen/qwen3-4b-everywhere"  # on all 8 hosts: the most work rank() can be given


NOTE = (
    f"`{COMMAND}`. In process, no network: the hosts are built as the gateway builds them "
    "(`app.gateway.build_lmstudio`: an `LMStudioClient` and a closed circuit breaker per host, "
    "`LMSTUDIO_BASE_URLS` with 1, 3 or 8 URLs), their model lists filled in as `list_models` leaves them. "
    "**rank()**: `rank(hosts, model, time.monotonic())` called in a loop over a precomputed list of models "
    "(the clock read and the loop are counted in); 3 hosts: "
    f"{len(THREE_HOSTS)} models, each on 1 or 2 hosts, loaded on some, the calls cycling over them; 8 hosts: "
    f"{EIGHT_HOSTS_MODELS} models, each on 2 to 4 hosts, loaded on about half, cycling, and one model on all "
    "8 hosts (every host scored and sorted: the worst case). **_routed**: `await upstream._routed(model, call)` "
    "where `call` is an `async def` returning at once (never suspends, so no event-loop scheduling is "
    "counted) vs `await call(client)` directly, in the same loop of the same run; the difference is what "
    "routing adds to every LLM call (the rank, the in-flight count up and down, the try/finally, the "
    "weighted `served` count, the result tuple). "
    f"Each figure: {CALLS:,} calls per timing, the cases interleaved, {REPEATS} timings per case, "
    "time.perf_counter_ns; the median, with the lowest and highest timing in brackets."
)

ANALYSIS = (
    "**What the figures say** (2026-11-29, two runs, medians): one host, the usual set-up, costs 0.08 µs per "
    "decision (`rank` hands the list back as it is) and about 0.55 µs for all of `_routed`; 3 hosts 0.84-0.85"
    " µs per decision and 1.43-1.48 µs for `_routed` (the rank plus the accounting: the clock read, in-flight"
    " up and down, the try/finally, the weighted `served` count, the result tuple); 8 hosts with each model "
    "on 2 to 4 of them 1.45-1.48 µs; the worst case, a model on all 8 hosts (every host scored and sorted), "
    "2.63-2.68 µs: the target is met in every case, and all of it is under 0.2 % of the ~1.4 ms of gateway "
    "CPU a one-hop run costs (next section). **History**: the first version took 1.73-1.89 µs for 3 hosts and"
    " 6.75-7.29 µs for the 8-host worst case (missed): scoring asked each host's circuit breaker whether it "
    "admits a call through five Python calls (`Host.admits` -> `Breaker.admits` -> `Breaker.state` -> "
    "aiobreaker's `current_state` -> its storage), about 0.4 µs a host, and sorted with `key=lambda item: "
    "item[:4]` (a slice per host). Now `Breaker.admits` is one attribute read while the breaker has not "
    "opened since it was last seen closed (0.06 µs, row above), and the tuples are sorted as they are (their "
    "index is unique, so a `Host` is never compared)."
)


@dataclass
class Timing:
    label: str
    samples_us: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples_us)

    def shown(self) -> str:
        return f"{self.median:.2f} µs/call [{min(self.samples_us):.2f}-{max(self.samples_us):.2f}]"


def _upstream(n: int) -> LMStudioHosts:
    """n hosts built as the gateway builds them (nothing listens at their URLs: nothing is sent)."""
    urls = [f"http://127.0.0.1:{1 + i}" for i in range(n)]
    settings = Settings(_env_file=None, lmstudio_base_url=urls[0], lmstudio_base_urls=urls if n > 1 else [])
    upstream = build_lmstudio(settings, Metrics())
    if len(upstream.hosts) != n:
        raise RuntimeError(f"built {len(upstream.hosts)} hosts, not {n}")
    return upstream


def _fill(hosts: list[Host], placement: list[tuple[str, dict[int, bool]]]) -> list[str]:
    """Each host's model list from `placement`; the model ids."""
    for index, host in enumerate(hosts):
        host.models = {
            model: ModelInfo(id=model, type="llm", loaded=on[index]) for model, on in placement if index in on
        }
    return [model for model, _ in placement]


def _eight_host_placement() -> list[tuple[str, dict[int, bool]]]:
    placement = []
    for m in range(EIGHT_HOSTS_MODELS):
        count = 2 + m % 3  # 2, 3 or 4 hosts
        on = {(m * 3 + k) % 8: (m + k) % 2 == 0 for k in range(count)}
        placement.append((f"org/model-{m:02d}", on))
    placement.append((EVERYWHERE, {i: i % 2 == 0 for i in range(8)}))
    return placement


def _time_rank(hosts: list[Host], models: list[str]) -> float:
    """µs per rank() call over CALLS calls cycling over `models`."""
    sequence = (models * (CALLS // len(models) + 1))[:CALLS]
    clock = time.monotonic
    perf = time.perf_counter_ns
    start = perf()
    for model in sequence:
        rank(hosts, model, clock())
    return (perf() - start) / CALLS / 1000


def _time_admits(host: Host) -> float:
    """µs per `Host.admits()` (its circuit breaker asked), which rank() calls for every host it scores."""
    admits = host.admits
    perf = time.perf_counter_ns
    start = perf()
    for _ in range(CALLS):
        admits()
    return (perf() - start) / CALLS / 1000


async def _trivial(client: LMStudioClient) -> int:
    return 0


async def _time_direct(upstream: LMStudioHosts, models: list[str]) -> float:
    sequence = (models * (CALLS // len(models) + 1))[:CALLS]
    client = upstream.hosts[0].client
    call: Callable[[LMStudioClient], Awaitable[int]] = _trivial
    perf = time.perf_counter_ns
    start = perf()
    for _ in sequence:
        await call(client)
    return (perf() - start) / CALLS / 1000


async def _time_routed(upstream: LMStudioHosts, models: list[str]) -> float:
    sequence = (models * (CALLS // len(models) + 1))[:CALLS]
    routed = upstream._routed
    call: Callable[[LMStudioClient], Awaitable[int]] = _trivial
    perf = time.perf_counter_ns
    start = perf()
    for model in sequence:
        await routed(model, call)
    return (perf() - start) / CALLS / 1000


def _check(cases: list[tuple[LMStudioHosts, list[str]]]) -> None:
    """rank() puts a host with the model loaded first and leaves out hosts without it; else nothing is timed."""
    for upstream, models in cases:
        n = len(upstream.hosts)
        for model in models:
            ranked = rank(upstream.hosts, model, time.monotonic())
            if n == 1:
                continue
            having = [h for h in upstream.hosts if model in h.models]
            if set(ranked) != set(having):
                raise RuntimeError(f"{n} hosts, {model}: ranked {[h.name for h in ranked]}")
            if any(h.models[model].loaded for h in having) and not ranked[0].models[model].loaded:
                raise RuntimeError(f"{n} hosts, {model}: a host without it loaded comes first")


async def run() -> dict[str, object]:
    upstreams = {n: _upstream(n) for n in (1, 3, 8)}
    try:
        models = {
            1: _fill(upstreams[1].hosts, [(model, {0: i % 2 == 0}) for i, (model, _) in enumerate(THREE_HOSTS)]),
            3: _fill(upstreams[3].hosts, THREE_HOSTS),
        }
        models[8] = [m for m in _fill(upstreams[8].hosts, _eight_host_placement()) if m != EVERYWHERE]
        _check([(upstreams[n], models[n]) for n in (1, 3, 8)] + [(upstreams[8], [EVERYWHERE])])
        rank_cases: dict[str, tuple[list[Host], list[str]]] = {
            "1 host": (upstreams[1].hosts, models[1]),
            f"3 hosts, {len(models[3])} models on 1-2 hosts each": (upstreams[3].hosts, models[3]),
            f"8 hosts, {len(models[8])} models on 2-4 hosts each": (upstreams[8].hosts, models[8]),
            "8 hosts, a model on all 8 (worst case)": (upstreams[8].hosts, [EVERYWHERE]),
        }
        routed_cases = {"1 host": (upstreams[1], models[1]), "3 hosts": (upstreams[3], models[3])}
        ranks = {label: Timing(label, []) for label in rank_cases}
        direct = {label: Timing(label, []) for label in routed_cases}
        routed = {label: Timing(label, []) for label in routed_cases}
        overhead = {label: Timing(label, []) for label in routed_cases}
        admits = Timing("admits", [])
        for upstream, ms in routed_cases.values():  # warm-up
            await _time_direct(upstream, ms)
            await _time_routed(upstream, ms)
        for _ in range(REPEATS):
            for label, (hosts, ms) in rank_cases.items():
                ranks[label].samples_us.append(_time_rank(hosts, ms))
            admits.samples_us.append(_time_admits(upstreams[8].hosts[0]))
            for label, (upstream, ms) in routed_cases.items():
                d = await _time_direct(upstream, ms)
                r = await _time_routed(upstream, ms)
                direct[label].samples_us.append(d)
                routed[label].samples_us.append(r)
                overhead[label].samples_us.append(r - d)
        for upstream in upstreams.values():
            if any(h.in_flight for h in upstream.hosts):
                raise RuntimeError("a host's in-flight count did not come back to 0")
    finally:
        for upstream in upstreams.values():
            await upstream.aclose()

    rows: list[Row] = []
    for label, timing in ranks.items():
        rows.append(
            (
                f"routing decision, `rank()`: {label}",
                f"{timing.shown()} ({verdict(timing.median <= TARGET_US)})",
                f"<= {TARGET_US:g} µs",
            )
        )
    rows.append(
        (
            "of which, for every host scored: `Host.admits()` (its circuit breaker asked, closed)",
            admits.shown(),
            "report",
        )
    )
    for label in routed_cases:
        rows.append(
            (
                f"trivial awaited call, {label}: direct; through `_routed`",
                f"{direct[label].shown()}; {routed[label].shown()}",
                "baseline",
            )
        )
        rows.append(
            (
                f"`_routed` overhead per call (routed - direct, per timing), {label}",
                f"{overhead[label].shown()} ({verdict(overhead[label].median <= TARGET_US)})",
                f"<= {TARGET_US:g} µs",
            )
        )
    return {"title": "Routing over several LM Studio hosts", "note": NOTE, "rows": rows, "analysis": ANALYSIS}
