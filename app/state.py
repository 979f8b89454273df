"""The typed state the lifespan builds once and every request shares."""

from __future__ import annotations

from dataclasses import dataclass

from app.settings import Settings
from services.catalog import ModelCatalog
from services.lmstudio import LMStudioClient


@dataclass(slots=True)
class BridgeState:
    settings: Settings
    lmstudio: LMStudioClient
    catalog: ModelCatalog
