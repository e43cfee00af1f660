"""Fixtures for the store tests: a records database on SQLite and on a real PostgreSQL.

Each PostgreSQL test gets its own schema (search_path set through the connection options), dropped
afterwards, so test runs and parallel workers never see each other's tables. PostgreSQL must be
reachable (CI starts it): when it is not, the postgres tests fail, they do not skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

POSTGRES_URL = os.environ.get("BAFANG_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is not reachable (CI starts it): {exc}", pytrace=False)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL of the test database whose search_path is a fresh, empty schema."""
    schema = f"bafang_test_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    with _admin() as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def records_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty records database: a SQLite file in a folder not yet created, or a PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'bafang.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
