"""Dependency aliases: routers get shared objects through these, never by building them."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from app.settings import Settings
from app.state import BridgeState
from services.agent import AgentService
from services.catalog import ModelCatalog
from services.lmstudio import LMStudioClient
from services.mcp_pool import MCPPool
from services.openai_compat import OpenAICompat


def get_state(request: Request) -> BridgeState:
    return cast(BridgeState, request.app.state.bridge)


def get_settings(request: Request) -> Settings:
    return get_state(request).settings


def get_lmstudio(request: Request) -> LMStudioClient:
    return get_state(request).lmstudio


def get_catalog(request: Request) -> ModelCatalog:
    return get_state(request).catalog


def get_pool(request: Request) -> MCPPool:
    return get_state(request).pool


def get_agent(request: Request) -> AgentService:
    return get_state(request).agent


def get_compat(request: Request) -> OpenAICompat:
    return get_state(request).compat


StateDep = Annotated[BridgeState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
LMStudioDep = Annotated[LMStudioClient, Depends(get_lmstudio)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]
PoolDep = Annotated[MCPPool, Depends(get_pool)]
AgentDep = Annotated[AgentService, Depends(get_agent)]
CompatDep = Annotated[OpenAICompat, Depends(get_compat)]
