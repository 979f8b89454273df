"""/docs and /redoc (off by default: their pages load from a CDN), and the metrics' route labels and process
collector."""

from __future__ import annotations

import re

import pytest

from tests.conftest import app_client, make_settings
from tests.mock_lmstudio.fixture import MockLMStudio


async def test_docs_pages_are_off_by_default_and_the_document_is_served(mock: MockLMStudio) -> None:
    async with app_client(make_settings(lmstudio_base_url=mock.base_url)) as client:
        docs, redoc, document = await client.get("/docs"), await client.get("/redoc"), await client.get("/openapi.json")
    assert (docs.status_code, redoc.status_code) == (404, 404), "no page that would be blank offline"
    assert document.status_code == 200 and document.json()["info"]["title"] == "lmstudio-bridge"


async def test_docs_pages_when_turned_on(mock: MockLMStudio) -> None:
    async with app_client(make_settings(lmstudio_base_url=mock.base_url, api_docs=True)) as client:
        docs, redoc = await client.get("/docs"), await client.get("/redoc")
    assert docs.status_code == redoc.status_code == 200
    # what docs/configuration.md says: the pages' scripts come from a CDN (hence off by default)
    assert "cdn.jsdelivr.net" in docs.text and "/openapi.json" in docs.text and "cdn.jsdelivr.net" in redoc.text


def series(metrics: str, name: str) -> list[str]:
    return [line for line in metrics.splitlines() if line.startswith(name)]


async def test_routes_without_templates_get_their_own_label_and_process_metrics_are_there(mock: MockLMStudio) -> None:
    async with app_client(make_settings(lmstudio_base_url=mock.base_url, api_docs=True)) as client:
        await client.get("/docs")
        await client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        await client.get("/no/such/path")
        await client.get("/v1/runs/run_x")
        metrics = (await client.get("/metrics")).text
    routes = set(re.findall(r'bridge_http_requests_total\{method="\w+",route="([^"]+)"', metrics))
    assert {"/docs", "/mcp", "unmatched", "/v1/runs/{run_id}"} <= routes, routes
    assert not any("/no/such" in route for route in routes), "an unknown path makes no series of its own"
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert series(metrics, name), f"{name} missing"


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_pages_are_unmatched_when_off(mock: MockLMStudio, path: str) -> None:
    async with app_client(make_settings(lmstudio_base_url=mock.base_url)) as client:
        assert (await client.get(path)).status_code == 404
