"""How routers get the gateway's shared objects, never by building them: the dependency aliases, or
`state_of(request)` on the hot routes (a run, an OpenAI call, a tool call). FastAPI solves every dependency
on every request, about 15 µs apiece (docs/performance.md), so those routes read the state off the request."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from app.gateway import BridgeState
from app.security import access_of
from services.access import Access
from services.agent import AgentService
from services.openai_compat import OpenAICompat
from services.runs import RunService


def state_of(request: Request) -> BridgeState:
    return cast(BridgeState, request.app.state.bridge)


# async: FastAPI would run plain `def` dependencies in a worker thread
async def get_state(request: Request) -> BridgeState:
    return state_of(request)


async def get_agent(request: Request) -> AgentService:
    return state_of(request).agent


async def get_compat(request: Request) -> OpenAICompat:
    return state_of(request).compat


async def get_runs(request: Request) -> RunService:
    return state_of(request).runs


async def get_access(request: Request) -> Access | None:
    """The scope of the request's API key (None: no keys configured)."""
    return access_of(request.scope)


StateDep = Annotated[BridgeState, Depends(get_state)]
AgentDep = Annotated[AgentService, Depends(get_agent)]
CompatDep = Annotated[OpenAICompat, Depends(get_compat)]
RunsDep = Annotated[RunService, Depends(get_runs)]
AccessDep = Annotated[Access | None, Depends(get_access)]
