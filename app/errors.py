"""One handler that renders every failure as an RFC 9457 problem document."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.errors import BridgeError, InvalidJSONError, InvalidRequestError

log = logging.getLogger("lmstudio_bridge.errors")
PROBLEM_JSON = "application/problem+json"
DEFAULT_RETRY_AFTER_S = 5
# The OpenAI-compatible routes: their problem documents also carry OpenAI's `error` object, so OpenAI SDKs
# (which read `error.message`) show our message. `/v1/models/...` covers OpenAI's GET /v1/models/{model}.
OPENAI_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/models"})
# Statuses a client may retry (after Retry-After): overloaded / rate limited, unavailable. Everything else is
# final: 4xx cannot pass unchanged, 501 is what this LM Studio is, and 502/504 come after the gateway's own
# retries of LM Studio. Said to clients in `x-should-retry` (which the OpenAI and Stainless SDKs obey).
RETRYABLE_STATUSES = frozenset({429, 503})
_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}
# the request member a code is about, as OpenAI's `param`
_PARAMS = {"model_not_found": "model", "no_model_loaded": "model", "mcp_server_not_found": "mcp_servers"}


class RouteError(BridgeError):
    """A framework-level HTTP error (unknown route, wrong method)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = {404: "not_found", 405: "method_not_allowed"}.get(status, f"http_{status}")
        self.title = {404: "Not found", 405: "Method not allowed"}.get(status, "HTTP error")


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # input values are left out: they may hold secrets and the client already has them
    return [
        {"loc": [str(part) for part in err.get("loc", ())], "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


def as_bridge_error(exc: Exception) -> BridgeError:
    if isinstance(exc, BridgeError):
        return exc
    if isinstance(exc, RequestValidationError):
        errors = _validation_errors(exc)
        if errors and all(e["type"] == "json_invalid" for e in errors):
            return InvalidJSONError(InvalidJSONError.title)
        summary = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
        return InvalidRequestError(summary or "Request is not valid", errors=errors)
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 400:  # FastAPI could not parse the body (e.g. nested too deep)
            return InvalidJSONError(InvalidJSONError.UNPARSABLE)
        return RouteError(exc.status_code, str(exc.detail))
    return BridgeError("The gateway failed unexpectedly; see its log for details")


def is_openai_path(path: str | None) -> bool:
    return bool(path) and (path in OPENAI_PATHS or str(path).startswith("/v1/models/"))


def openai_error(problem: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's error object for a problem document: message = detail, code = our stable code."""
    status = int(problem.get("status") or 500)
    code = str(problem.get("code") or "internal_error")
    param = _PARAMS.get(code)
    errors = problem.get("errors")
    if param is None and isinstance(errors, list) and errors and isinstance(errors[0], dict):
        loc = [part for part in errors[0].get("loc", []) if part != "body"]
        param = ".".join(str(part) for part in loc) or None
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {
        "message": str(problem.get("detail") or problem.get("title") or code),
        "type": kind,
        "param": param,
        "code": code,
    }


def problem_response(err: BridgeError, instance: str | None = None) -> Response:
    body = err.problem()
    if instance:
        body["instance"] = instance
    if is_openai_path(instance):
        body["error"] = openai_error(body)
    headers = {"x-should-retry": "true" if err.status in RETRYABLE_STATUSES else "false"}
    retry_after = err.retry_after
    if retry_after is None and err.status in (429, 503):
        retry_after = DEFAULT_RETRY_AFTER_S  # e.g. LM Studio refused the connection: worth a retry soon
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if err.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="lmstudio-bridge"'
    # ASCII-escaped JSON: a detail quoting a client's text (even a lone surrogate) always renders
    return Response(json.dumps(body).encode(), status_code=err.status, headers=headers, media_type=PROBLEM_JSON)


async def handle_error(request: Request, exc: Exception) -> Response:
    err = as_bridge_error(exc)
    if err.status >= 500 and not isinstance(exc, BridgeError):
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(err, request.url.path)


def install_error_handler(app: FastAPI) -> None:
    for exc_type in (BridgeError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(exc_type, handle_error)
