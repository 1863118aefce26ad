"""A private schema in the test PostgreSQL (127.0.0.1:5432, database
``test``) for one test, so parallel runs never see each other's queues."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def private_schema() -> Iterator[str]:
    """A fresh schema's name, dropped with everything in it afterwards."""
    psycopg = pytest.importorskip("psycopg")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def schema_url(schema: str) -> str:
    """The URL of the test database with ``schema`` first on the search path."""
    return f"{PG_URL}?options=-csearch_path%3D{schema}"
