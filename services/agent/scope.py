"""What an API key may use: the one place a requested model and a run's tools are resolved within its scope."""

from __future__ import annotations

from services.access import Access
from services.agent.ports import Models
from services.errors import InvalidRequestError, ModelNotFoundError
from services.lmstudio import ModelKind, ResolvedModel
from services.mcp import ToolSet, split_qualified


async def resolve_model(
    catalog: Models, requested: str | None, access: Access | None, *, kind: ModelKind = "chat"
) -> ResolvedModel:
    """The resolved model (aliases, default), within the key's scope: a key is told only of the models it may use,
    and a model outside its scope (the default included) is 403."""
    try:
        model = await catalog.resolve(requested, kind=kind)
    except ModelNotFoundError as exc:
        if access is None:
            raise
        raise exc.within(lambda m: access.model_allowed(m, catalog.aliases)) from None
    if access is not None:
        access.check_model(model.id, catalog.aliases)
    return model


def scoped_tools(tools: ToolSet, access: Access | None, allowed_tools: list[str] | None) -> ToolSet:
    """The tools a run may offer: those of the key's scope, narrowed to `allowed_tools` when given. Naming a tool
    outside the scope is 403; naming one the servers do not have is 422 listing those they have."""
    if access is not None:  # tools outside the key's scope are never offered
        if allowed_tools is not None:
            named = {t.model_name: t for t in tools.tools}
            access.check_tools((named[n].server, named[n].name) for n in allowed_tools if n in named)
        tools = ToolSet([t for t in tools.tools if access.tool_allowed(t.server, t.name)])
    if allowed_tools is None:
        return tools
    known = {t.model_name for t in tools.tools}
    unknown = [name for name in allowed_tools if name not in known]
    if unknown and access is not None:  # a tool of a server outside the scope: forbidden, not unknown
        access.check_tools(pair for pair in map(split_qualified, unknown) if pair is not None)
    if unknown:
        raise InvalidRequestError(
            f"allowed_tools names tools the chosen servers do not have: {', '.join(unknown)}",
            unknown_tools=unknown,
            available_tools=sorted(known),
        )
    allowed = set(allowed_tools)
    return ToolSet([t for t in tools.tools if t.model_name in allowed])
