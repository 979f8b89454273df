"""The typed state the lifespan builds once and every request shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.settings import Settings
from services.agent import AgentService
from services.catalog import ModelCatalog
from services.limits import RunLimiter
from services.lmstudio import LMStudioClient
from services.mcp_pool import MCPPool
from services.metrics import Metrics
from services.openai_compat import OpenAICompat


@dataclass(slots=True)
class BridgeState:
    settings: Settings
    lmstudio: LMStudioClient
    catalog: ModelCatalog
    pool: MCPPool
    mcp_config_path: Path | None
    limiter: RunLimiter
    agent: AgentService
    compat: OpenAICompat
    metrics: Metrics
