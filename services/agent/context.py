"""What every part of a run is handed: the gateway's shared services and run settings, in one object."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.access import KeyRing
from services.agent.approvals import ApprovalPolicy
from services.agent.defaults import RunDefaults
from services.agent.ports import Engine, Models, Tools
from services.agent.state import Journals
from services.context import TokenCounter
from services.limits import RunLimiter
from services.metrics import Metrics


@dataclass(slots=True)
class RunContext:
    """The services a run works with; built once by `AgentService`, shared by all its runs."""

    lmstudio: Engine
    catalog: Models
    pool: Tools
    limiter: RunLimiter
    defaults: RunDefaults
    metrics: Metrics
    approvals: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    keys: KeyRing = field(default_factory=KeyRing)
    journals: Journals | None = None  # None: runs are not recorded
    tokens: TokenCounter = field(default_factory=TokenCounter)  # prompt estimates, calibrated per model
