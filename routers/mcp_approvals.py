"""Approvals by elicitation at the MCP front door: a run started by a front-door tool whose client declared
elicitation (form mode) asks that client about each call that needs a person's yes, with a form showing the
server, the tool and the exact arguments; the answer decides the call like `POST /v1/runs/{id}/approvals/{call}`
(the same `approval.decided` event and step record). A client without it keeps the REST route.

This module imports the MCP SDK: only the front door (routers.mcp_front) imports it."""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from mcp.server.elicitation import AcceptedElicitation, DeclinedElicitation
from mcp.server.mcpserver import Context
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field

from services.agent.approvals import REASON_MAX_CHARS, ApprovalRequest, Asker, Decision

log = logging.getLogger("lmstudio_bridge.mcp")

DECLINED = "the MCP client's user declined to decide"
DISMISSED = "the MCP client's user dismissed the request"


class ApprovalForm(BaseModel):
    """What the client's user fills in (the elicitation's requested schema)."""

    decision: Literal["approve", "deny"] = Field(
        description="approve: the tool runs with exactly these arguments; deny: it does not run"
    )
    reason: str = Field("", description="Why (optional); a denial's reason is what the model reads")


def elicitation_asker(ctx: Context[Any, Any] | None) -> Asker | None:
    """An asker over the tool call's own request when its client can answer a form elicitation there; None
    when it cannot: it declared no elicitation (or URL mode only), or the connection has no back-channel for a
    server's request (the 2026-07-28 revision asks through input-required results, which a run cannot pause
    for), or there is no request at all."""
    try:
        capabilities = ctx.client_capabilities if ctx is not None else None
        version = ctx.protocol_version if ctx is not None else None
    except ValueError:  # no request context
        return None
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None or version not in HANDSHAKE_PROTOCOL_VERSIONS:
        return None
    if elicitation.form is None and elicitation.url is not None:  # `{}` means form mode (the spec's default)
        return None
    assert ctx is not None

    async def ask(request: ApprovalRequest) -> Decision:
        result = await ctx.elicit(form_message(request), ApprovalForm)
        if isinstance(result, AcceptedElicitation):
            form: ApprovalForm = result.data
            reason = form.reason[:REASON_MAX_CHARS]
            return Decision("approved" if form.decision == "approve" else "denied", reason)
        return Decision("denied", DECLINED if isinstance(result, DeclinedElicitation) else DISMISSED)

    return ask


def form_message(request: ApprovalRequest) -> str:
    """What the form says: which tool of which server, with exactly which arguments."""
    arguments = json.dumps(request.arguments, indent=2, ensure_ascii=False, default=str)
    return (
        f"The local model wants to call the tool {request.tool!r} of the MCP server {request.server!r} "
        f"({request.name}, call {request.tool_call_id}) with these arguments:\n{arguments}\n"
        "Approve runs exactly these arguments; deny does not run the tool, and the model reads your reason."
    )
