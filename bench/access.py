"""Access control: what a request costs with a scoped API key (keys file) vs a plain one (BRIDGE_API_KEYS), on
one gateway, and what `KeyRing.resolve` costs with 1, 12 and 100 keys (first, last and a wrong key)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import Contender, Row, Server, compare, gateway, http_client, mock_lmstudio, warm_up, write_mcp_config
from services.access import Access, KeyRing, full_access
from tests.helpers import TIME_CALL, script

SERVER = "time"  # the real mcp-server-time, as the tests start it
TASK = "What time is it in UTC? Use the tool. " + script(calls=[[TIME_CALL]])
PLAIN_KEY = "bench-plain-key-0123456789abcdef"
SCOPED_KEY = "bench-scoped-key-0123456789abcdef"
OTHER_KEYS = 10  # more keys in the file: the constant-time comparison goes over 1 + 1 + 10 = 12 keys
MODELS_N = 5000  # GET /v1/models per key, after WARMUP each
RUNS_N = 2000  # runs per key
WARMUP = 50
BLOCKS = 20
RING_SIZES = (1, 12, 100)
RESOLVE_CALLS = 20_000  # per timing; RESOLVE_REPEATS timings per (size, key), interleaved; the median is reported
RESOLVE_REPEATS = 7
CHECK_CALLS = 20_000
COMMAND = ".venv/bin/python -m bench access"

SCOPED = {"name": "scoped", "key": SCOPED_KEY, "servers": [SERVER], "tools": [f"{SERVER}__*"], "models": ["*"]}

NOTE = (
    f"`{COMMAND}`. One gateway with `BRIDGE_API_KEYS=<plain key>` (full access, admin) and `BRIDGE_KEYS_FILE` "
    f'holding a scoped key (`servers: ["{SERVER}"]`, `tools: ["{SERVER}__*"]`, `models: ["*"]`, no limits) '
    f"and {OTHER_KEYS} more keys, so every request's key goes through the constant-time comparison with "
    f"{2 + OTHER_KEYS} digests; the zero-latency mock LM Studio. Per key, after {WARMUP} warm-up requests: "
    f"{MODELS_N} `GET /v1/models` and {RUNS_N} runs (`POST /v1/autonomous`, "
    f'`mcp_servers: ["{SERVER}"]`, `"store": false`, a `[[mock ...]]` script that makes the model call the real '
    "mcp-server-time's `get_current_time` once, then answer: the run of the Run store section, unrecorded so "
    "that the store's background writer does not blur the CPU figures), sequential on one keep-alive client, "
    f"the two keys interleaved in {BLOCKS} blocks. Gateway CPU = psutil user+system time of the gateway "
    "process around each block / requests. Both keys go through the same code (the middleware resolves the "
    "key, the run checks model, servers and tools against the key's globs; the plain key's are `*`), so the "
    "difference is what a narrow scope costs over a full one; the whole of it is bounded by the in-process "
    "rows: `KeyRing.resolve` (SHA-256 of the presented key, then `hmac.compare_digest` with every key, no "
    f"early exit; {RESOLVE_CALLS:,} calls per timing, the median of {RESOLVE_REPEATS} interleaved timings) and "
    "a run's scope checks."
)


ANALYSIS = (
    "**What the figures say** (2026-11-29, three runs): a scoped key costs nothing the same-run HTTP comparison "
    "can tell from noise. Scoped - plain on runs: -72 / +27 / -28 µs in p50, -35 / +15 / +5 µs in gateway CPU; "
    "on `GET /v1/models`: +3 / +6 / -12 µs in p50, +6 / +16 / -2 µs in CPU (both keys take the same path there: "
    "the list filtered with the key's `models` globs, `*` for both). The in-process rows bound the whole of "
    "access control per request: resolving a key is one SHA-256 (~0.5 µs) plus ~0.05 µs per key held, the "
    "same for the first, the last and a wrong key (no early exit, so the time tells nothing about which key "
    "matched), i.e. ~1 µs with 12 keys and ~5 µs with 100; a run's model, server and tool checks are ~5 µs "
    "(fnmatch, compiled patterns cached), about the same for `*` and for a narrow scope. Together under "
    "0.01 ms per run, against 2.5 ms of gateway CPU."
)


async def run() -> dict[str, object]:
    rows: list[Row] = []
    async with contextlib.AsyncExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-access-")))
        config = write_mcp_config(directory, [SERVER])
        keys_file = directory / "keys.json"
        keys_file.write_text(json.dumps({"keys": _file_keys()}))
        mock = await stack.enter_async_context(mock_lmstudio())
        client = await stack.enter_async_context(http_client())
        bridge = await stack.enter_async_context(
            gateway(
                mock.base_url,
                config,
                name="gateway-access",
                BRIDGE_API_KEYS=PLAIN_KEY,
                BRIDGE_KEYS_FILE=str(keys_file),
            )
        )
        await _check(client, bridge)
        for what, n, call in (
            ("GET /v1/models", MODELS_N, _list_models),
            ('POST /v1/autonomous (time tool, "store": false)', RUNS_N, _post_run),
        ):
            plain = Contender("plain key", call(client, bridge, PLAIN_KEY), [bridge])
            scoped = Contender("scoped key", call(client, bridge, SCOPED_KEY), [bridge])
            await warm_up([plain, scoped], WARMUP)
            await compare([plain, scoped], n, BLOCKS)
            rows += _http_rows(what, plain, scoped, bridge)
    rows += _resolve_rows()
    rows += _check_rows()
    return {"title": "Access control", "note": NOTE, "rows": rows, "analysis": ANALYSIS}


def _file_keys() -> list[dict[str, Any]]:
    others = [
        {"name": f"other-{i}", "key_sha256": hashlib.sha256(f"bench-other-key-{i:04d}-abcdef".encode()).hexdigest()}
        for i in range(OTHER_KEYS)
    ]
    return [SCOPED, *others]


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _list_models(client: httpx.AsyncClient, bridge: Server, key: str) -> Any:
    url, headers = bridge.url("/v1/models"), _headers(key)

    async def call() -> Any:
        response = await client.get(url, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:1000]}")
        return response.json()

    return call


def _post_run(client: httpx.AsyncClient, bridge: Server, key: str, servers: list[str] | None = None) -> Any:
    url, headers = bridge.url("/v1/autonomous"), _headers(key)
    body = {"task": TASK, "mcp_servers": servers or [SERVER], "store": False}

    async def call() -> Any:
        response = await client.post(url, json=body, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"POST {url}: {response.status_code} {response.text[:1000]}")
        return response.json()

    return call


async def _check(client: httpx.AsyncClient, bridge: Server) -> None:
    """Both keys list the same models and complete the run with its tool step; a wrong key gets 401, and the
    scoped key's scope is in force (403 for another server). Else nothing is measured."""
    listed = [await _list_models(client, bridge, key)() for key in (PLAIN_KEY, SCOPED_KEY)]
    if [m["id"] for m in listed[0]["data"]] != [m["id"] for m in listed[1]["data"]] or not listed[0]["data"]:
        raise RuntimeError(f"the keys list different models: {json.dumps(listed)[:1000]}")
    for key in (PLAIN_KEY, SCOPED_KEY):
        result = await _post_run(client, bridge, key)()
        if result["status"] != "completed" or len(result["steps"]) != 1 or result["steps"][0].get("error"):
            raise RuntimeError(f"unexpected run result: {result!r}")
    wrong = await client.get(bridge.url("/v1/models"), headers=_headers("bench-wrong-key-0123456789abcdef"))
    if wrong.status_code != 401:
        raise RuntimeError(f"a wrong key: {wrong.status_code}, not 401")
    body = {"task": TASK, "mcp_servers": ["memory"], "store": False}
    refused = await client.post(bridge.url("/v1/autonomous"), json=body, headers=_headers(SCOPED_KEY))
    if refused.status_code != 403:
        raise RuntimeError(f"the scoped key on another server: {refused.status_code}, not 403: {refused.text[:500]}")


def _http_rows(what: str, plain: Contender, scoped: Contender, bridge: Server) -> list[Row]:
    p50 = scoped.p50 - plain.p50
    cpu = scoped.cpu_ms(bridge) - plain.cpu_ms(bridge)
    return [
        (
            f"{what}: p50 / p99, plain key; scoped key",
            f"{plain.p50:.2f} / {plain.p99:.2f} ms; {scoped.p50:.2f} / {scoped.p99:.2f} ms",
            "baseline",
        ),
        (f"{what}: scoped - plain, p50", f"{p50 * 1000:+.0f} µs", "report"),
        (
            f"{what}: gateway CPU per request, plain key; scoped key",
            f"{plain.cpu_ms(bridge):.3f}; {scoped.cpu_ms(bridge):.3f} ms/request",
            "baseline",
        ),
        (f"{what}: scoped - plain, gateway CPU per request", f"{cpu * 1000:+.0f} µs", "report"),
    ]


# --- in-process ---------------------------------------------------------------------------------------


def _per_call_us(fn: Any, arg: Any, calls: int) -> float:
    perf = time.perf_counter
    start = perf()
    for _ in range(calls):
        fn(arg)
    return (perf() - start) / calls * 1e6


def _resolve_rows() -> list[Row]:
    """µs per `KeyRing.resolve` with 1, 12 and 100 keys, presenting the first key, the last and a wrong one."""
    rings = {}
    for size in RING_SIZES:
        keys = [f"bench-ring-key-{i:04d}-0123456789abcdef" for i in range(size)]
        rings[size] = (KeyRing.build(keys, None), {"first": keys[0], "last": keys[-1], "wrong": f"{keys[0]}-wrong"})
    timings: dict[tuple[int, str], list[float]] = {}
    for _ in range(RESOLVE_REPEATS):
        for size, (ring, presented) in rings.items():
            for which, key in presented.items():
                if (ring.resolve(key) is None) != (which == "wrong"):
                    raise RuntimeError(f"KeyRing.resolve({which} of {size}) answered wrong")
                timings.setdefault((size, which), []).append(_per_call_us(ring.resolve, key, RESOLVE_CALLS))
    rows: list[Row] = []
    for size in RING_SIZES:
        med = {which: statistics.median(timings[(size, which)]) for which in ("first", "last", "wrong")}
        rows.append(
            (
                f"KeyRing.resolve, {size} key(s): presenting the first; the last; a wrong key",
                f"{med['first']:.2f}; {med['last']:.2f}; {med['wrong']:.2f} µs/call",
                "report",
            )
        )
    return rows


def _check_rows() -> list[Row]:
    """µs for a run's scope checks (check_model, check_servers, the offered tools filtered) with each key."""
    tools = [(SERVER, "get_current_time"), (SERVER, "convert_time")]
    model = "qwen/qwen3-4b"

    def checks(access: Access) -> None:
        access.check_model(model, {})
        access.check_servers([SERVER])
        [t for t in tools if access.tool_allowed(*t)]

    plain = full_access("plain")
    scoped = Access(name="scoped", servers=(SERVER,), tools=(f"{SERVER}__*",), models=("*",))
    timings: dict[str, list[float]] = {"plain": [], "scoped": []}
    for _ in range(RESOLVE_REPEATS):
        for label, access in (("plain", plain), ("scoped", scoped)):
            timings[label].append(_per_call_us(checks, access, CHECK_CALLS))
    return [
        (
            f"a run's scope checks (model, 1 server, {len(tools)} tools), in process: plain key; scoped key",
            f"{statistics.median(timings['plain']):.2f}; {statistics.median(timings['scoped']):.2f} µs/run",
            "report",
        )
    ]
