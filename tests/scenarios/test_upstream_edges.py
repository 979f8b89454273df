"""Upstream edges of issue 29 (items 4, 8 and 12): transient failures of the model-list probes, the connect
timeout on every path, a dead host in the model list, a stream whose engine dies, the record of a run that
failed after a tool ran. Each case is listed in docs/reliability.md."""

from __future__ import annotations

from tests.conftest import app_client, make_settings
from tests.mock_lmstudio.fixture import MockLMStudio

QWEN, CODER = "qwen/qwen3-4b", "qwen/qwen3-coder-30b"
LISTING = "/api/v1/models"


# --- item 4: a 401 on a model-list probe is not "this API is missing" ----------------------------------


async def test_three_401s_on_the_probes_then_a_healthy_lmstudio_needs_no_restart(mock: MockLMStudio) -> None:
    unauthorized = {"kind": "status", "status": 401, "path": LISTING, "body": {"error": "Unauthorized"}}
    await mock.faults(unauthorized, unauthorized, unauthorized)
    async with app_client(make_settings(lmstudio_base_url=mock.base_url, model_cache_ttl_s=0)) as gateway:
        refused = [await gateway.get("/v1/models") for _ in range(3)]
        listed = await gateway.get("/v1/models")
        loaded = await gateway.post(f"/v1/models/{CODER}/load")
        after = await gateway.get("/v1/models")
    for answer in refused:  # the 401 said as it is, not a fallback to another API
        assert answer.status_code >= 400 and "401" in answer.json()["detail"], answer.text
    assert listed.status_code == 200, listed.text
    states = {m["id"]: m["state"] for m in listed.json()["data"]}
    assert states[QWEN] == "loaded" and states[CODER] == "not-loaded"  # the REST API's states, not OpenAI's list
    assert loaded.status_code == 200, loaded.text  # not 501 not_supported_by_lmstudio
    assert {m["id"]: m["state"] for m in after.json()["data"]}[CODER] == "loaded"
    paths = [r["path"] for r in await mock.requests() if r["method"] == "GET"]
    assert "/v1/models" not in paths and "/api/v0/models" not in paths, paths  # never fell back
