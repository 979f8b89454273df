"""Routing by score (BRIDGE_ROUTE_BY_SCORE): a run that names no model goes to the loaded model with the best
tool_score; a run that names one keeps it; with no scored loaded model the default stays."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import eventually
from tests.mock_lmstudio.fixture import MockLMStudio

pytestmark = pytest.mark.timeout(120)
DEFAULT, CODER = "qwen/qwen3-4b", "qwen/qwen3-coder-30b"


@pytest.fixture(scope="module")
def gateway_settings() -> dict[str, Any]:
    return {"route_by_score": True}


async def test_a_run_naming_no_model_goes_to_the_best_scored_loaded_model(
    bridge: httpx.AsyncClient, mock: MockLMStudio
) -> None:
    before = (await bridge.post("/v1/autonomous", json={"task": "hi"})).json()
    assert before["model"] == DEFAULT and not any("tool_score" in w for w in before["warnings"])

    (started,) = (await bridge.post("/v1/evals", json={"models": [CODER], "tasks": ["no_tool_capital"]})).json()["data"]

    async def ended() -> bool:
        return bool((await bridge.get(f"/v1/evals/{started['eval_id']}")).json()["status"] == "completed")

    await eventually(ended, 60, "the eval's end")  # the mock loaded CODER for it (JIT): it is loaded and scored
    routed = (await bridge.post("/v1/autonomous", json={"task": "hi"})).json()
    assert routed["model"] == CODER
    assert f"routed to '{CODER}', the best tool_score (0)" in " ".join(routed["warnings"])
    named = (await bridge.post("/v1/autonomous", json={"task": "hi", "model": DEFAULT})).json()
    assert named["model"] == DEFAULT and not any("tool_score" in w for w in named["warnings"])
