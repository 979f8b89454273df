"""Fixtures of the run store's tests."""

from __future__ import annotations

from typing import cast

import pytest

from tests.conftest import store_url


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    """A fresh run store's URL: a SQLite file, or a database of the session's PostgreSQL cluster."""
    if request.param == "sqlite":
        return store_url()
    return cast(str, request.getfixturevalue("postgres_url"))
