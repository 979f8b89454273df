"""`make bench` (`python -m bench`): run the benchmarks in one process and write docs/performance.md.

Absolute times drift on shared machines, so every figure is compared with baselines measured
in the same run (see each section). Naming sections runs only those and prints their tables
without touching docs/performance.md, unless `--write` is given: then just those sections are
written (replaced in place, or added before the hand-written ones), each saying the command.
The hand-written sections of docs/performance.md (HAND_WRITTEN)
are kept as they are, after the measured ones.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import platform
import re
import sys
import time
from typing import Any

from tests.helpers import REPO

# modules of bench/, in report order
SECTIONS = [
    "mcp_call",
    "autonomous",
    "tracing",
    "run_upstreams",
    "memory",
    "passthrough",
    "catalog",
    "real_engine",
    "context",
    "answer_reading",
    "run_store",
    "access",
    "routing",
    "replicas",
    "key_limits",
    "evals",
]
OUT = REPO / "docs" / "performance.md"
# sections of OUT written by hand (profiles, figures behind code choices): kept verbatim on every run
HAND_WRITTEN = ("Where the time goes", "Figures behind code choices")


def hand_written(text: str) -> list[str]:
    """The HAND_WRITTEN sections of an existing OUT, verbatim, in their order there."""
    sections = re.split(r"(?m)^(?=## )", text)
    return [
        part.rstrip() + "\n"
        for part in sections
        if part.startswith("## ") and part[3:].split("\n", 1)[0].strip() in HAND_WRITTEN
    ]


def render(results: list[dict[str, Any]], kept: list[str] | None = None) -> str:
    lines = [
        "# Performance",
        "",
        "Produced by `make bench` (`python -m bench`); do not edit by hand, except the sections "
        f"{' and '.join(repr(t) for t in HAND_WRITTEN)}, which it keeps as they are.",
        f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}.",
        "",
    ]
    for result in results:
        lines += section(result)
    for part in kept or []:
        lines += [part.rstrip(), ""]
    return "\n".join(lines)


def section(result: dict[str, Any], command: str | None = None) -> list[str]:
    """One result as its docs/performance.md section (lines); `command`: the one that measured it alone."""
    lines = [f"## {result['title']}", ""]
    if command:
        lines += [f"Measured alone by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    if result.get("note"):
        lines += [str(result["note"]), ""]
    lines += ["| measure | value | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in result["rows"]]
    lines.append("")
    if result.get("analysis"):
        lines += [str(result["analysis"]), ""]
    return lines


def write_sections(text: str, results: list[dict[str, Any]], command: str) -> str:
    """`text` (docs/performance.md) with the sections of `results` replaced, or inserted before the hand-written
    sections when new."""
    parts = re.split(r"(?m)^(?=## )", text)
    for result in results:
        new = "\n".join(section(result, command)) + "\n"
        titles = [part[3:].split("\n", 1)[0].strip() if part.startswith("## ") else None for part in parts]
        if result["title"] in titles:
            parts[titles.index(result["title"])] = new
        else:
            at = next((i for i, t in enumerate(titles) if t in HAND_WRITTEN), len(parts))
            parts.insert(at, new)
    return "".join(part if part.endswith("\n\n") or part is parts[-1] else part + "\n" for part in parts)


async def run(sections: list[str]) -> list[dict[str, Any]]:
    results = []
    for name in sections:
        result: dict[str, Any] = await importlib.import_module(f"bench.{name}").run()
        print(f"## {result['title']}")
        for row in result["rows"]:
            print("  ", " | ".join(row))
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=f"some of: {', '.join(SECTIONS)}")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    parser.add_argument("--write", action="store_true", help="with SECTIONs: write just those to docs/performance.md")
    args = parser.parse_args()
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.list:
        print("\n".join(SECTIONS))
        return
    results = asyncio.run(run(args.sections or SECTIONS))
    if not args.sections:
        kept = hand_written(OUT.read_text()) if OUT.exists() else []
        OUT.write_text(render(results, kept))
        print(f"wrote {OUT}", file=sys.stderr)
    elif args.write:
        command = f"python -m bench {' '.join(args.sections)} --write"
        OUT.write_text(write_sections(OUT.read_text() if OUT.exists() else render([]), results, command))
        print(f"wrote {len(results)} section(s) of {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
