"""Aids that lift small models, each switchable (settings, per-model profiles, or an eval's own choice):
`nudge` (round 1 answered without a call although tools were offered: asked once more with `tool_choice:
"required"`), `repair` (arguments repaired to the tool's schema: a value for a one-item array, an enum's case),
`loop_hint` (the first repeated call gets one corrective message instead of ending the run `loop`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.agent.records import Step
from services.lmstudio import ToolCall

AID_NAMES = ("nudge", "repair", "loop_hint")
NUDGE_WARNING = 'The model answered round 1 without a tool call; it was asked once more with tool_choice "required"'
LOOP_HINT_WARNING = "The model repeated the same tool call; it was told so once before the run would end `loop`"


@dataclass(frozen=True, slots=True)
class Aids:
    nudge: bool = False
    repair: bool = False
    loop_hint: bool = False

    @classmethod
    def of(cls, names: Iterable[str]) -> Aids:
        """The aids named (`AID_NAMES`); ValueError naming an unknown one."""
        wanted = set(names)
        unknown = wanted - set(AID_NAMES)
        if unknown:
            raise ValueError(f"unknown aid(s) {sorted(unknown)}; known: {', '.join(AID_NAMES)}")
        return cls(**{name: True for name in wanted})

    @property
    def names(self) -> list[str]:
        return [name for name in AID_NAMES if getattr(self, name)]


@dataclass(frozen=True, slots=True)
class AidProfiles:
    """The aids a run gets: its model's profile (BRIDGE_AID_PROFILES), else the settings' defaults."""

    default: Aids = field(default_factory=Aids)
    models: Mapping[str, Aids] = field(default_factory=dict)

    def for_model(self, model_id: str) -> Aids:
        return self.models.get(model_id, self.default)


def nudge_due(aids: Aids, rounds: int, answer_calls: int, offered: bool, choice: Any) -> bool:
    """Round 1 ended without a call (an answer in prose, or prose cut at the token limit) although tools were
    offered and the request left tool_choice to the model."""
    return aids.nudge and rounds == 0 and offered and not answer_calls and choice is None


def loop_hint_text(call: ToolCall, steps: list[Step], repeats: int) -> str:
    """The corrective message: what was repeated, and what its results were."""
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        arguments = call.arguments
    same = [s for s in steps if s.name == call.name and s.arguments == arguments]
    last = same[-1].output[:500] if same else "(no result)"
    return (
        f"Error: you have called {call.name} with the same arguments {repeats} times in a row. Its result was:\n"
        f"{last}\nDo not call it again with these arguments: answer the task from this result, or call another "
        "tool or the same tool with other arguments."
    )
