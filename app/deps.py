"""Dependency aliases: routers get shared objects through these, never by building them."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from app.gateway import BridgeState
from app.security import access_of
from services.access import Access
from services.agent import AgentService
from services.evals import EvalService
from services.mcp import MCPPool
from services.openai_compat import OpenAICompat
from services.runs import RunService


def _state(request: Request) -> BridgeState:
    return cast(BridgeState, request.app.state.bridge)


# async: FastAPI would run plain `def` dependencies in a worker thread
async def get_state(request: Request) -> BridgeState:
    return _state(request)


# For the hot routes, which take the request itself: a dependency costs FastAPI a resolution per request
def pool_of(request: Request) -> MCPPool:
    """The MCP pool, for the REST tool call."""
    return _state(request).pool


async def get_pool(request: Request) -> MCPPool:
    return pool_of(request)


def agent_of(request: Request) -> AgentService:
    """The agent service, for the run routes (which take the request itself)."""
    return _state(request).agent


async def get_agent(request: Request) -> AgentService:
    return agent_of(request)


def compat_of(request: Request) -> OpenAICompat:
    """The OpenAI-compatible service, for the pass-through routes (which take the request itself)."""
    return _state(request).compat


async def get_compat(request: Request) -> OpenAICompat:
    return compat_of(request)


async def get_runs(request: Request) -> RunService:
    return _state(request).runs


async def get_access(request: Request) -> Access | None:
    """The scope of the request's API key (None: no keys configured)."""
    return access_of(request.scope)


StateDep = Annotated[BridgeState, Depends(get_state)]
PoolDep = Annotated[MCPPool, Depends(get_pool)]
AgentDep = Annotated[AgentService, Depends(get_agent)]
CompatDep = Annotated[OpenAICompat, Depends(get_compat)]
RunsDep = Annotated[RunService, Depends(get_runs)]
AccessDep = Annotated[Access | None, Depends(get_access)]


async def get_evals(request: Request) -> EvalService:
    return _state(request).evals


EvalsDep = Annotated[EvalService, Depends(get_evals)]
