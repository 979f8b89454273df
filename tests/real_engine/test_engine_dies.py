"""The real engine dying under the gateway (issue 29, cases 16 and 17): a pass-through stream whose llama-server
is killed mid-answer, then what the model list and readiness say.

The test starts its OWN llama-server (the session's engine serves the other tests) with a gateway in front of it,
reads the first chunks of a long streamed answer, kills the engine (SIGKILL: no goodbye on the socket) and reads on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import make_settings, served
from tests.real_engine.engine import running_engine

pytestmark = pytest.mark.real_engine

CLIENT_TIMEOUT_S = 90.0
# a long answer: the engine is still generating when it is killed (ignore_eos: no early end of turn)
LONG = {
    "model": "default",
    "messages": [{"role": "user", "content": "Write a very long story about a cat who lives in Paris."}],
    "max_tokens": 3000,
    "ignore_eos": True,
    "temperature": 0,
    "stream": True,
}


async def test_an_engine_dying_mid_stream_ends_the_pass_through_with_an_error_chunk(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    uvicorn_log = logging.getLogger("uvicorn")  # where "Exception in ASGI application" goes (not propagated)
    # the 60 s model cache of a default configuration, no retries: the dead host must show at once, not on expiry
    with running_engine() as engine:
        settings = make_settings(
            lmstudio_base_url=engine.base_url, model_cache_ttl_s=60, lmstudio_retries=0, log_level="WARNING"
        )
        async with served(settings, timeout=CLIENT_TIMEOUT_S) as gateway:
            uvicorn_log.addHandler(caplog.handler)  # after uvicorn configured its loggers
            try:
                listed = await gateway.get("/v1/models")  # fills the cache while the engine is up
                assert [m["state"] for m in listed.json()["data"]] == ["loaded"], listed.text
                async with gateway.stream("POST", "/v1/chat/completions", json=LONG) as response:
                    assert response.status_code == 200
                    lines = response.aiter_lines()
                    before = [line async for line in _until_text(lines)]  # the first chunks have come through
                    engine.process.kill()
                    engine.process.wait()
                    after = [line async for line in lines if line]
                models = await gateway.get("/v1/models")  # nothing else looked at the engine in between
                ready = await gateway.get("/readyz")
            finally:
                uvicorn_log.removeHandler(caplog.handler)

    # the client's stream: the chunks sent before the kill, then an error chunk in OpenAI's shape and [DONE]
    assert [_chunk(line)["object"] for line in before] == ["chat.completion.chunk"] * len(before)
    assert after, "the stream ended with nothing after the engine died"
    assert after[-1] == "data: [DONE]", after[-3:]
    error = _chunk(after[-2])
    assert (error["code"], error["error"]["code"], error["error"]["type"]) == (
        "upstream_error",
        "upstream_error",
        "server_error",
    ), error
    assert "broke off" in error["error"]["message"], error
    assert all(_chunk(line)["object"] == "chat.completion.chunk" for line in after[:-2])  # text chunks, if any

    # the dead host shows at once (the model list was cached 60 s), and readiness says it is down
    assert models.status_code == 200, models.text
    [model] = models.json()["data"]
    assert model["state"] == "not-loaded" and model["loaded_context_length"] is None, model
    assert [host["state"] for host in model["hosts"]] == ["unreachable"], model
    assert ready.status_code == 503, ready.text
    assert [host["ok"] for host in ready.json()["lmstudio"]["hosts"]] == [False], ready.text

    # the break is logged as a warning; no ASGI exception, no traceback
    logged = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert any("broke off a streamed answer" in message for _, _, message in logged), logged
    assert not any("Exception in ASGI application" in message for _, _, message in logged), logged
    assert not any(r.exc_info for r in caplog.records), logged


async def _until_text(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The stream's lines up to and including the first chunk with generated text."""
    async for line in lines:
        if not line:
            continue
        yield line
        choices = _chunk(line).get("choices") or [{}]
        if choices[0].get("delta", {}).get("content"):
            return


def _chunk(line: str) -> dict[str, Any]:
    assert line.startswith("data: ") and line != "data: [DONE]", line
    return dict(json.loads(line.removeprefix("data: ")))
