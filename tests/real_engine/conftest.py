"""The real-engine lane: llama.cpp's llama-server with a real small model (SmolLM2-135M-Instruct).

`real_engine` (session) is a running llama-server (see engine.py): built once per machine by
scripts/build-llama-server.sh, started with --jinja and the Qwen2.5 tool template, stopped at the end.
A missing binary is built right after collection when a selected test has the `real_engine` marker, so
the ~10 min first build runs outside any test's timeout; a build that cannot be done fails those tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.real_engine.engine import RealEngine, built_already, ensure_built, running_engine


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_engine: runs against a real llama-server with a real small model")


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly or not any(item.get_closest_marker("real_engine") for item in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and not built_already():
        reporter.write_line("real_engine: building llama-server once for this machine (about 10 min)...")
    ensure_built()  # remembers a failure; the fixture reports it


@pytest.fixture(scope="session")
def real_engine() -> Iterator[RealEngine]:
    with running_engine() as engine:
        yield engine
