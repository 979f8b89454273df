"""Fixtures of the run store's tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def url(database_url: str) -> str:
    """A fresh run store's URL, of each kind (tests/conftest.py `database_url`)."""
    return database_url
