"""A run's limits: the gateway's settings, and what applies to one run once its request's own values are taken."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.agent.aids import AidProfiles
from services.agent.records import RunSpec
from services.context.fit import ContextPolicy


@dataclass(frozen=True, slots=True)
class RunDefaults:
    """The gateway's run settings (from `Settings`); a request's own values win."""

    max_rounds: int
    run_timeout_s: float
    tool_output_max_chars: int
    load_timeout_s: float | None
    max_tokens: int
    repeat_call_limit: int
    text_tool_calls: bool = True  # recover tool calls written as text
    capture_content: bool = False
    approval_timeout_s: float = 300.0  # a call nobody decides on is denied after this
    context: ContextPolicy = field(default_factory=ContextPolicy)  # how the model's window is shared
    aids: AidProfiles = field(default_factory=AidProfiles)  # BRIDGE_AID_* and BRIDGE_AID_PROFILES

    def limits_for(self, spec: RunSpec) -> RunLimits:
        """The run's limits: the request's own, else these settings (the one place defaults are applied)."""
        return RunLimits(
            max_rounds=spec.max_rounds or self.max_rounds,
            max_tokens=spec.max_tokens or self.max_tokens,
            timeout_s=spec.timeout_s or self.run_timeout_s,
        )


@dataclass(frozen=True, slots=True)
class RunLimits:
    """A run's limits as they apply to it."""

    max_rounds: int
    max_tokens: int
    timeout_s: float
