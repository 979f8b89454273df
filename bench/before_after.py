"""This checkout's gateway against another checkout's (`--base DIR`, e.g. a `git worktree` of an older commit), in
one process, the contenders interleaved: the pass-through chat (one message, and 200 messages of 2 KB) and the
REST tool call (`fault.echo`, `everything.echo`). Same-run figures only: the machine may be shared.

    git worktree add /tmp/base <commit>
    .venv/bin/python -m bench.before_after --base /tmp/base

Both gateways run on this venv; the base one with ``python -P`` and PYTHONPATH=<base>, so its own packages are
imported (not this checkout's). Prints a Markdown table; writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from bench.common import (
    Contender,
    Server,
    compare,
    floor,
    http_client,
    mock_lmstudio,
    post_json,
    serve_command,
    warm_up,
    write_mcp_config,
)

N = 1000
WARMUP = 100
CHAT = "/v1/chat/completions"
ONE = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "Say hi."}]}
MANY = {
    "model": "qwen/qwen3-4b",
    "messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} " + "x" * 2000} for i in range(199)]
    + [{"role": "user", "content": "Say hi."}],
}
TOOLS = [("fault", "echo", {"text": "hi"}), ("everything", "echo", {"message": "hi"})]


@contextlib.asynccontextmanager
async def _gateway(name: str, lmstudio_url: str, config: Path, code: Path | None) -> AsyncIterator[Server]:
    """``app.cli serve`` of this checkout (`code` None) or of the checkout at `code`."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-store-") as store:
        env = {
            "LMSTUDIO_BASE_URL": lmstudio_url,
            "MCP_CONFIG": str(config),
            "BRIDGE_LOG_LEVEL": "WARNING",
            "BRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{store}/runs.db",
        }
        command = [sys.executable, "-m", "app.cli", "serve"]
        if code is not None:
            command = [sys.executable, "-P", "-m", "app.cli", "serve"]
            env["PYTHONPATH"] = str(code)
        async with serve_command(name, command, health="/healthz", env=env) as server:
            yield server


async def run(base: Path, n: int) -> list[tuple[str, str, str, str, str]]:
    async with contextlib.AsyncExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-before-after-")))
        config = write_mcp_config(directory, [server for server, *_ in TOOLS])
        mock = await stack.enter_async_context(mock_lmstudio())
        before = await stack.enter_async_context(_gateway("before", mock.base_url, config, base))
        after = await stack.enter_async_context(_gateway("after", mock.base_url, config, None))
        ground = await stack.enter_async_context(floor())
        client = await stack.enter_async_context(http_client())

        pairs: list[tuple[str, Contender, Contender]] = []
        for label, body in (("pass-through chat, 1 message", ONE), ("pass-through chat, 200 messages of 2 KB", MANY)):
            pairs.append(
                (
                    label,
                    Contender(f"before: {label}", post_json(client, before.url(CHAT), body), [before]),
                    Contender(f"after: {label}", post_json(client, after.url(CHAT), body), [after]),
                )
            )
        for server, tool, args in TOOLS:
            path = f"/v1/mcp/servers/{server}/tools/{tool}"
            label = f"REST tool call {server}.{tool}"
            pairs.append(
                (
                    label,
                    Contender(f"before: {label}", post_json(client, before.url(path), args), [before]),
                    Contender(f"after: {label}", post_json(client, after.url(path), args), [after]),
                )
            )
        floor_c = Contender("floor", post_json(client, ground.url("/"), ONE), [ground])
        direct = Contender("direct to the mock, 200 messages", post_json(client, mock.url(CHAT), MANY), [mock])
        contenders = [floor_c, direct, *(c for _, *two in pairs for c in two)]
        await warm_up(contenders, WARMUP)
        await compare(contenders, n)

        rows = [
            (
                label,
                f"{old.p50:.2f} / {new.p50:.2f} ms",
                f"{old.cpu_ms(before):.2f} / {new.cpu_ms(after):.2f} ms",
                f"{new.cpu_ms(after) / old.cpu_ms(before):.2f}",
                f"{old.p99:.2f} / {new.p99:.2f} ms",
            )
            for label, old, new in pairs
        ]
        rows.append(("floor (fixed JSON)", f"{floor_c.p50:.2f} ms", f"{floor_c.cpu_ms(ground):.2f} ms", "", ""))
        rows.append(
            ("direct to the mock, 200 messages", f"{direct.p50:.2f} ms", f"{direct.cpu_ms(mock):.2f} ms", "", "")
        )
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (a git worktree)")
    parser.add_argument("-n", type=int, default=N, help=f"measured calls per contender (default {N})")
    options = parser.parse_args()
    rows = asyncio.run(run(options.base.resolve(), options.n))
    print(
        "| what | p50 before / after | gateway CPU per call before / after | CPU after / before | p99 before / after |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
