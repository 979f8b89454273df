"""LM Studio's answers and httpx's failures mapped to the domain errors of `services.errors`.

Failures that may pass (connect errors, 429, 502, 503, 504) are marked `retryable`.
"""

from __future__ import annotations

import re
import time
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import aiohttp.http_exceptions
import httpx

from services.errors import (
    LLMConnectionError,
    LLMError,
    LLMRateLimitError,
    LLMResponseError,
    LLMTimeoutError,
    LLMValidationError,
    ModelNotFoundError,
    NoModelLoadedError,
    NotSupportedError,
)
from services.lmstudio.answer import Answer
from services.lmstudio.overflow import empty_answer, overflow_error

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
UNKNOWN_ENDPOINT = "Unexpected endpoint or method"  # LM Studio's 200 answer to a path it does not have
# with JIT loading off and nothing loaded; a plain string error on chat (assafelovic/gpt-researcher#1556),
# an object with `"code": null` on /v1/responses (lmstudio-bug-tracker #1730)
NO_MODELS_LOADED = "No models loaded"
INVALID_MODEL = "Invalid model identifier"  # current LM Studio's 400 for an unknown model
_EXAMPLES = re.compile(r"\(e\.g\., ([^()]*)\)")


def _retry_after(response: Answer) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _error_message(body: Any) -> str:
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err if err is not None else body)


def _models_from_message(message: str) -> list[str]:
    """The model ids an unknown-model message names: "(e.g., a, b, c)" now, "Your models:\n..." before."""
    examples = _EXAMPLES.search(message)
    if examples:
        return [name.strip() for name in examples.group(1).split(",") if name.strip()]
    _, _, listing = message.partition("Your models:")
    return [line.strip().lstrip("-• ").strip() for line in listing.splitlines() if line.strip()]


def _quoted(message: str) -> str | None:
    """The model id an error message names in double quotes."""
    found = re.search(r'"([^"]+)"', message)
    return found.group(1) if found else None


def _model_error(status: int, body: Any, message: str, model: str | None) -> LLMError | None:
    """No model loaded, or an unknown model in either version's words (current LM Studio: 400 "Invalid model
    identifier ...", `code` model_not_found; older: 404 "... not found"); else None."""
    if message.startswith(NO_MODELS_LOADED):
        return NoModelLoadedError(model)
    err = body.get("error") if isinstance(body, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    if status == 404:
        missing = code == "model_not_found" or "not found" in message.lower()
    else:
        missing = status == 400 and (code == "model_not_found" or message.startswith(INVALID_MODEL))
    name = model or (_quoted(message) if message.startswith(INVALID_MODEL) else None)
    return ModelNotFoundError(name, _models_from_message(message)) if missing and name else None


_DECODED = "lmstudio_bridge.json"  # where a response keeps its decoded body (decoded once per answer)


def decoded(response: Answer) -> Any:
    """The response's JSON body (None when it is not JSON), decoded at most once."""
    if _DECODED not in response.extensions:
        try:
            response.extensions[_DECODED] = response.json()
        except ValueError:
            response.extensions[_DECODED] = None
    return response.extensions[_DECODED]


def error_for_response(response: Answer, model: str | None = None) -> LLMError | None:
    """The domain error an LM Studio response (body read) stands for, or None when it is a success."""
    status = response.status_code
    body: Any = decoded(response)
    if status < 400:
        if body is None:
            return LLMResponseError(f"LM Studio answered {status} with a body that is not JSON")
        if isinstance(body, dict) and "error" in body and "choices" not in body and "data" not in body:
            return _error_with_success_status(status, body, model)
        return None
    message = _error_message(body) if body is not None else response.text[:500]
    err = overflow_error(status, body, message) or (
        _model_error(status, body, message, model) if status < 500 else None
    )
    if err is not None:
        return err
    if status == 429:
        err = LLMRateLimitError(f"LM Studio is rate limiting: {message}", retry_after=_retry_after(response))
    elif status >= 500:
        err = LLMResponseError(f"LM Studio answered {status}: {message}", retry_after=_retry_after(response))
    else:
        err = LLMValidationError(f"LM Studio rejected the request ({status}): {message}", upstream_status=status)
    err.retryable = status in RETRYABLE_STATUS
    return err


def _error_with_success_status(status: int, body: Any, model: str | None) -> LLMError:
    """An error LM Studio answers with a 2xx: an unknown path, no model loaded, a prompt over the context window
    (LM Studio 0.4.21, lmstudio-bug-tracker#2322), or anything else it says."""
    message = _error_message(body)
    overflow = overflow_error(status, body, message)
    if overflow is not None:
        return overflow
    if message.startswith(UNKNOWN_ENDPOINT):
        return NotSupportedError(f"This LM Studio does not support it: {message}")
    if message.startswith(NO_MODELS_LOADED):
        return NoModelLoadedError(model)
    return LLMResponseError(f"LM Studio answered with an error: {message}")


def error_for_chat(response: Answer, model: str | None = None) -> LLMError | None:
    """`error_for_response` for a (non-streamed) chat completion, which is also an overflow when it says nothing
    at all (`overflow.empty_answer`)."""
    return error_for_response(response, model) or (
        empty_answer(decoded(response)) if response.status_code < 300 else None
    )


ABSENT_STATUS = frozenset({404, 405})  # a model-list probe's answers that say the path is not there


def error_for_probe(response: Answer, model: str | None = None) -> LLMError | None:
    """For a model-list probe, a 2xx (read by `HostAPI.models`: LM Studio's "Unexpected endpoint" or a list in
    another shape means "not this API") and 404/405 (no such path) are answers; anything else (401, 403, other
    4xx, 429, 5xx) is an error: the host cannot say now which APIs it has, so none is marked absent and the
    detection is tried again on the next listing."""
    status = response.status_code
    if status < 400 or status in ABSENT_STATUS:
        return None
    return error_for_response(response, model)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes (httpx-aiohttp raises httpx errors caused by aiohttp's)."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def _retryable(err: LLMError) -> LLMError:
    err.retryable = True
    return err


def error_for_exception(exc: BaseException) -> LLMError:
    """The domain error a failed exchange stands for, told apart truthfully: refused, timed out,
    dropped before the answer was complete, or an answer that is not HTTP."""
    chain = _chain(exc)
    root = chain[-1]
    name = f"{type(root).__name__}: {' '.join(str(root).split())[:200]}"
    if any(isinstance(e, aiohttp.ServerDisconnectedError | httpx.RemoteProtocolError) for e in chain):
        # also a kept-alive connection closed by the server as the request went out: safe to send again
        return _retryable(LLMResponseError(f"LM Studio closed the connection before its answer was complete ({name})"))
    if any(isinstance(e, aiohttp.ClientPayloadError | httpx.ReadError) for e in chain):
        return LLMResponseError(f"LM Studio's answer was cut short ({name})")  # not resent: generating is costly
    if any(isinstance(e, aiohttp.ClientResponseError | aiohttp.http_exceptions.HttpProcessingError) for e in chain):
        return LLMResponseError(f"LM Studio answered with something that is not HTTP ({name})")
    if any(isinstance(e, aiohttp.ConnectionTimeoutError | httpx.ConnectTimeout) for e in chain) and not any(
        isinstance(e, aiohttp.ClientConnectorError) and not isinstance(e, aiohttp.ConnectionTimeoutError) for e in chain
    ):
        return _retryable(
            LLMConnectionError(f"LM Studio is not reachable: no connection within the time limit ({name})")
        )
    if any(isinstance(e, aiohttp.ClientConnectorError | httpx.ConnectError) for e in chain):
        return _retryable(LLMConnectionError(f"LM Studio is not reachable: the connection was refused ({name})"))
    if any(isinstance(e, httpx.TimeoutException | aiohttp.ServerTimeoutError | TimeoutError) for e in chain):
        return LLMTimeoutError(f"LM Studio did not answer in time ({type(exc).__name__})")
    return LLMResponseError(f"LM Studio connection failed ({name})")


def counts_against_lmstudio(exc: BaseException) -> bool:
    """Failures that say LM Studio is down or broken (not a bad request, a missing model or a 429)."""
    return isinstance(exc, LLMConnectionError | LLMTimeoutError | LLMResponseError)
