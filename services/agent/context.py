"""What every part of a run is handed: the gateway's shared services and run settings, in one object."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.access import KeyRing
from services.agent.approvals import ApprovalPolicy
from services.agent.defaults import RunDefaults
from services.agent.state import Journals
from services.context.fit import FixedRatio, Windows
from services.limits import RunLimiter
from services.lmstudio import LMStudioHosts, ModelCatalog, ResolvedModel
from services.mcp import MCPPool
from services.metrics import Metrics


@dataclass(slots=True)
class RunContext:
    """The services a run works with; built once by `AgentService`, shared by all its runs."""

    lmstudio: LMStudioHosts
    catalog: ModelCatalog
    pool: MCPPool
    limiter: RunLimiter
    defaults: RunDefaults
    metrics: Metrics
    approvals: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    keys: KeyRing = field(default_factory=KeyRing)
    journals: Journals | None = None  # None: runs are not recorded
    tokens: FixedRatio = field(default_factory=FixedRatio)  # prompt estimates, calibrated per model
    windows: Windows = field(default_factory=Windows)  # windows the engines told of in overflow answers

    def window_of(self, model: ResolvedModel) -> int:
        """The model's context window in tokens: as an engine said in an overflow answer, else as loaded
        (the host's listing), else the setting's default."""
        loaded: int | None = getattr(model.info, "loaded_context_length", None)
        return self.windows.learned(model.id) or loaded or self.defaults.context.default_tokens
