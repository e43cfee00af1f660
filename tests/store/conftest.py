"""Fixtures for the store tests: a records database on SQLite and on a real PostgreSQL (tests/conftest.py
``postgres_url``)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def records_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty records database: a SQLite file in a folder not yet created, or a PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'bafang.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
