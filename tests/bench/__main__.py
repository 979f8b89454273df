"""`make bench`: run every benchmark in one process and write docs/performance.md.

Absolute times drift on shared machines, so every figure is compared with baselines measured
in the same run (see each section).
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.bench import autonomous, catalog, mcp_call, passthrough, tracing

SECTIONS: list[Callable[[], Awaitable[dict[str, Any]]]] = [
    mcp_call.run,
    autonomous.run,
    tracing.run,
    passthrough.run,
    catalog.run,
]
OUT = Path(__file__).resolve().parents[2] / "docs" / "performance.md"


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "# Performance",
        "",
        "Produced by `make bench` (`python -m tests.bench`); do not edit by hand.",
        f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}.",
        "",
    ]
    for result in results:
        lines += [f"## {result['title']}", ""]
        if result.get("note"):
            lines += [str(result["note"]), ""]
        lines += ["| measure | value | target |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in result["rows"]]
        lines.append("")
        if result.get("analysis"):
            lines += [str(result["analysis"]), ""]
    return "\n".join(lines)


async def main() -> None:
    results = []
    for section in SECTIONS:
        result = await section()
        print(f"## {result['title']}")
        for row in result["rows"]:
            print("  ", " | ".join(row))
        results.append(result)
    OUT.write_text(render(results))
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
