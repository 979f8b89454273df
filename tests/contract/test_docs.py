"""The docs keep up with the code: every setting, metric, endpoint and SSE event is documented."""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import generate_latest

from services.metrics import Metrics, StateReader
from tests.contract.test_compose import setting_names
from tests.contract.test_openapi import operations
from tests.helpers import REPO

DOCS = REPO / "docs"
PAGES = ("architecture", "api", "configuration", "context", "multi-model", "operations", "troubleshooting")


def read(page: str) -> str:
    return (DOCS / f"{page}.md").read_text(encoding="utf-8")


def test_configuration_covers_every_setting() -> None:
    text = read("configuration")
    missing = sorted(name for name in setting_names() if f"`{name}`" not in text)
    assert not missing, f"docs/configuration.md does not mention {missing}"
    for field in ("${env:", "disabled", "timeout", "allowedTools", "disabledTools", "Recursion guard"):
        assert field in text, field


def test_operations_lists_every_metric() -> None:
    metrics = Metrics()
    metrics.watch(StateReader())
    exposed = re.findall(r"^# TYPE (\S+) ", generate_latest(metrics.registry).decode(), re.M)
    names = {name for name in exposed if not name.endswith("_created")}
    text = read("operations")
    missing = sorted(name for name in names if f"`{name}`" not in text)
    assert not missing, f"docs/operations.md does not list {missing}"
    for span in ("agent.run", "chat <model>", "tools/call <server>__<tool>", "MCP send", "BRIDGE_SHUTDOWN_GRACE_S"):
        assert span in text, span


def test_api_shows_every_endpoint_with_curl(openapi_doc: dict[str, Any]) -> None:
    text = read("api")
    for method, path, _ in operations(openapi_doc):
        assert f"`{method.upper()} {path}`" in text, (method, path)
        example = re.sub(r"\{(\w+)\}", r"[^ ']+", path)
        assert re.search(rf"curl [^\n]*localhost:8000{example}[ '\n]", text), f"no curl example for {path}"
    for event in ("run.started", "round.started", "tool_call.started", "tool_call.completed", "message"):
        assert f"`{event}`" in text, event


def test_readme_links_the_docs_and_links_resolve() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for page in PAGES:
        assert f"(docs/{page}.md)" in readme, page
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", read(page)):
            assert (DOCS / target).exists(), f"docs/{page}.md links to a missing {target}"
