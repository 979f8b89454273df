"""Domain errors. Each carries the HTTP status and stable `code` of its problem document.

Services raise these; `app.errors` renders them as RFC 9457 problem+json. Nothing here
knows about HTTP frameworks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# the redactors of the gateways running in this process (one, but tests start several): see `redacting`
_REDACTORS: list[Callable[[str], str]] = []


@contextmanager
def redacting(redact: Callable[[str], str]) -> Iterator[None]:
    """While the gateway runs, every error's `detail` is redacted when it is made: the one place secrets (LM
    Studio's token, host tokens, API keys, mcp.json env and header values) are kept out of problem documents,
    SSE `run.failed` events, chat errors, run warnings and outputs that quote an error, the MCP front door's
    tool errors and the log lines that quote them (an upstream answering 401 "Invalid API token '<token>'")."""
    _REDACTORS.append(redact)
    try:
        yield
    finally:
        _REDACTORS.remove(redact)


def redacted(text: str) -> str:
    for redact in list(_REDACTORS):
        text = redact(text)
    return text


class BridgeError(Exception):
    """Base of every failure the gateway reports to a client."""

    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"

    def __init__(self, detail: str, *, retry_after: float | None = None, **extras: Any) -> None:
        detail = redacted(detail)
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
        self.extras = extras

    def for_step(self, index: int, name: str) -> BridgeError:
        """The same error, said of step `index` (`name`) of a pipeline."""
        self.detail = f"step {index} ({name!r}): {self.detail}"
        self.args = (self.detail,)
        self.extras = {**self.extras, "step": index, "step_name": name}
        return self

    def problem(self) -> dict[str, Any]:
        """The problem document body (without `instance`)."""
        return {
            "type": f"urn:lmstudio-bridge:problem:{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            **self.extras,
        }


class InvalidRequestError(BridgeError):
    status, code, title = 422, "validation_error", "Request is not valid"


class InvalidJSONError(BridgeError):
    """The body is not JSON, or nested deeper than the parser allows."""

    status, code, title = 400, "invalid_json", "The body is not valid JSON"
    UNPARSABLE = "The body could not be parsed as JSON (malformed or nested too deeply)"  # not UTF-8, too deep


class UnauthorizedError(BridgeError):
    status, code, title = 401, "unauthorized", "Missing or wrong API key"


class PayloadTooLargeError(BridgeError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class ForbiddenError(BridgeError):
    """The API key may not use what the request names (a server, tool or model), or is not an admin."""

    status, code, title = 403, "forbidden", "Outside the API key's scope"


class KeyRateLimitedError(BridgeError):
    status, code, title = 429, "key_rate_limited", "The API key is over its rate or concurrency limit"


class KeyLimitsUnavailableError(BridgeError):
    """A key with limits, while the shared store that counts them across gateway processes does not answer."""

    status, code, title = 503, "key_limits_unavailable", "The API key's limits cannot be checked"


class OverloadedError(BridgeError):
    status, code, title = 429, "overloaded", "Too many runs in progress"


class ClientGoneError(BridgeError):
    """Recorded for a run whose client went away (it was cancelled); no client reads it."""

    status, code, title = 499, "client_disconnected", "The client went away"


# --- runs (the run store) ---------------------------------------------------------------


class RunNotFoundError(BridgeError):
    status, code, title = 404, "run_not_found", "Run not found"


class EvalNotFoundError(BridgeError):
    status, code, title = 404, "eval_not_found", "Eval not found"


class RunFinishedError(BridgeError):
    status, code, title = 409, "run_finished", "The run has already ended"


class RunActiveError(BridgeError):
    status, code, title = 409, "run_active", "The run has not ended yet"


class ApprovalNotFoundError(BridgeError):
    status, code, title = 404, "approval_not_found", "No tool call of this run awaits a decision"


class RunInterruptedError(BridgeError):
    """Recorded for a run the gateway stopped under (shutdown, or found unfinished at start-up)."""

    status, code, title = 503, "interrupted", "Run interrupted"


class QueueFullError(BridgeError):
    status, code, title = 429, "queue_full", "Too many runs are queued"


class StoreUnavailableError(BridgeError):
    status, code, title = 503, "store_unavailable", "The run store is not available"


# --- LM Studio -------------------------------------------------------------------------


class LLMError(BridgeError):
    """A call to LM Studio failed."""

    status, code, title = 502, "upstream_error", "LM Studio call failed"
    retryable: bool = False  # set on instances whose cause may pass (connect errors, 429, 502-504)


class LLMConnectionError(LLMError):
    status, code, title = 503, "upstream_unavailable", "LM Studio is not reachable"


class LLMTimeoutError(LLMError):
    status, code, title = 504, "upstream_timeout", "LM Studio did not answer in time"


class LLMRateLimitError(LLMError):
    status, code, title = 429, "upstream_rate_limited", "LM Studio is rate limiting"


class LLMResponseError(LLMError):
    """LM Studio answered 5xx or something that is not a valid answer."""

    status, code, title = 502, "upstream_error", "LM Studio answered with an error"


class LLMValidationError(LLMError):
    """LM Studio rejected the request (4xx other than 404 model / 429)."""

    status, code, title = 422, "upstream_rejected", "LM Studio rejected the request"


class ContextExceededError(LLMError):
    """The request does not fit the model's context window: the engine said so (n_ctx and n_prompt when it gave
    them; `shape` says how: n_keep, exceeds, empty, usage), or the gateway found it could not fit the request."""

    status, code, title = 422, "context_exceeded", "The request does not fit the model's context window"

    def __init__(
        self, detail: str, *, n_ctx: int | None = None, n_prompt: int | None = None, shape: str = "fit", **extras: Any
    ) -> None:
        super().__init__(detail, n_ctx=n_ctx, n_prompt=n_prompt, shape=shape, **extras)
        self.n_ctx = n_ctx
        self.n_prompt = n_prompt
        self.shape = shape


class ShuttingDownError(BridgeError):
    status, code, title = 503, "shutting_down", "The gateway is shutting down"


class NotSupportedError(LLMError):
    """This LM Studio does not have the endpoint (it answers 200 "Unexpected endpoint or method")."""

    status, code, title = 501, "not_supported_by_lmstudio", "Not supported by this LM Studio"


class ModelNotFoundError(LLMError):
    status, code, title = 422, "model_not_found", "Model not found"

    def __init__(self, model: str, available_models: list[str], aliases: dict[str, str] | None = None) -> None:
        listing = ", ".join(available_models) or "(none)"
        super().__init__(
            f"Model {model!r} is not available. Available models: {listing}",
            model=model,
            available_models=available_models,
            aliases=aliases or {},
        )
        self.model = model
        self.available_models = available_models
        self.aliases = aliases or {}

    def within(self, allowed: Callable[[str], bool]) -> ModelNotFoundError:
        """The same error listing only the models (and aliases) `allowed` lets the caller see."""
        models = [m for m in self.available_models if allowed(m)]
        return ModelNotFoundError(self.model, models, {a: m for a, m in self.aliases.items() if allowed(m)})


class NoModelLoadedError(LLMError):
    """LM Studio has no model loaded and does not load one on demand (its JIT loading is off)."""

    status, code, title = 422, "no_model_loaded", "No model loaded in LM Studio"

    def __init__(self, model: str | None = None) -> None:
        path = f"/v1/models/{model or '{model_id}'}/load"
        super().__init__(
            "LM Studio has no model loaded and does not load one on demand (its JIT loading is off). "
            f"Load a model first with POST {path} (GET /v1/models lists them), or turn on JIT loading "
            "in LM Studio's server settings.",
            model=model,
            load_endpoint=f"POST {path}",
        )
        self.model = model


class UpstreamUnavailableError(BridgeError):
    """A circuit breaker is open: fail fast until it lets a trial call through."""

    status, code, title = 503, "upstream_unavailable", "Upstream temporarily unavailable"


# --- MCP -------------------------------------------------------------------------------


class MCPServerError(BridgeError):
    """A failure involving an MCP server."""

    status, code, title = 502, "mcp_error", "MCP server error"


class MCPServerNotFoundError(MCPServerError):
    status, code, title = 422, "mcp_server_not_found", "MCP server not configured"

    def __init__(self, name: str, available_servers: list[str]) -> None:
        listing = ", ".join(available_servers) or "(none configured)"
        super().__init__(
            f"MCP server {name!r} is not configured. Available servers: {listing}",
            server=name,
            available_servers=available_servers,
        )


class MCPToolNotFoundError(MCPServerError):
    status, code, title = 404, "tool_not_found", "Tool not found"

    def __init__(self, server: str, tool: str, available_tools: list[str]) -> None:
        super().__init__(
            f"Server {server!r} has no tool {tool!r}. Available tools: {', '.join(available_tools)}",
            server=server,
            tool=tool,
            available_tools=available_tools,
        )


class MCPServerUnavailableError(MCPServerError):
    status, code, title = 503, "mcp_server_unavailable", "MCP server unavailable"


class MCPRequestError(MCPServerError):
    """A server refused a resources or prompts request (an unknown URI or prompt, missing arguments)."""

    status, code, title = 422, "mcp_request_failed", "The MCP server refused the request"


class MCPToolTimeoutError(MCPServerError):
    status, code, title = 504, "tool_timeout", "Tool call timed out"


class MCPConfigError(Exception):
    """The mcp.json file is invalid; raised at start-up, never rendered to a client."""
