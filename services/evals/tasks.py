"""What one eval task is: how its scratch files are laid out, what the model is asked, and how a program (never
a model) decides whether the run did the work."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.agent.records import RunResult, Step

WORDS = (
    "amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "harbor", "indigo", "juniper", "kestrel",
    "lantern", "marble", "nectar", "orchid", "pebble", "quartz", "raven", "saffron", "tundra", "umber", "velvet",
    "willow", "yarrow", "zephyr",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Scratch:
    """The scratch place of one eval: the filesystem server's root and the memory server's file."""

    files: Path
    memory: Path

    def write(self, relative: str, text: str) -> Path:
        path = self.files / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def memory_entities(self) -> list[dict[str, Any]]:
        """The entities the memory server has stored (its JSON-lines file)."""
        if not self.memory.exists():
            return []
        found = []
        for line in self.memory.read_text().splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict) and item.get("type") == "entity":
                found.append(item)
        return found


@dataclass(frozen=True, slots=True)
class Prepared:
    """A task made concrete for one eval: the prompt the model gets and the facts its check knows."""

    prompt: str
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a check looks at: the run's result (output, steps, status) and the scratch place after it."""

    result: RunResult
    scratch: Scratch
    facts: dict[str, Any]

    @property
    def output(self) -> str:
        return self.result.output or ""

    def ok_steps(self, tool: str | None = None) -> list[Step]:
        """Steps that ran on an MCP server without error (of `tool` only, when given)."""
        return [s for s in self.result.steps if s.server and not s.is_error and (tool is None or s.tool == tool)]


Prepare = Callable[[Scratch, random.Random], Prepared]
Check = Callable[[Evidence], Verdict]


@dataclass(frozen=True, slots=True)
class EvalTask:
    """One task of the suite. `servers`: the eval's MCP servers it is offered (time, filesystem, memory)."""

    name: str
    kind: str  # what it measures: time, read, write, memory, chain, no_tool, recovery, window
    servers: tuple[str, ...]
    prepare: Prepare
    check: Check
    max_rounds: int = 4


def token(rng: random.Random) -> str:
    """A secret the model cannot guess: two words and four digits."""
    return f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{rng.randint(1000, 9999)}"


def passed(reason: str) -> Verdict:
    return Verdict(True, reason)


def failed(reason: str) -> Verdict:
    return Verdict(False, reason)
