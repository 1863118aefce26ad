"""Choosing the PostgreSQL store: `[store] kind = "postgresql"`, `serve --store URL`."""

from __future__ import annotations

import argparse

import pytest

from starlingpy.cli import serve
from starlingpy.config import ConfigError, parse_config
from starlingpy.store.postgres import default_identity, libpq_url


def test_store_section_chooses_postgresql(tmp_path):
    config = parse_config('[store]\nkind = "postgresql"\nurl = "postgresql+psycopg://u@h/db"\n'
                          'identity = "front-1"\nlease = 10\npool_size = 2\n', tmp_path / "q.toml")
    store = config.store
    assert (store.kind, store.url, store.identity, store.lease, store.pool_size) == (
        "postgresql", "postgresql+psycopg://u@h/db", "front-1", 10, 2)


@pytest.mark.parametrize("text, message", [
    ('[store]\nlease = 0\n', "q.toml:2: key 'store.lease': must be at least 1"),
    ('[store]\npool_size = 0\n', "q.toml:2: key 'store.pool_size': must be at least 1"),
    ('[store]\nurl = 5\n', "q.toml:2: key 'store.url': expected a string"),
])
def test_bad_postgresql_settings_are_refused(tmp_path, text, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "q.toml")
    assert message in str(caught.value)


def test_store_flag_chooses_postgresql():
    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--store", "postgresql://u@h/db", "--identity", "a",
                              "--lease", "5"])
    store = serve.resolve_config(args).store
    assert (store.kind, store.url, store.identity, store.lease) == ("postgresql", "postgresql://u@h/db",
                                                                    "a", 5.0)


def test_urls_reach_libpq_in_its_own_spelling():
    assert libpq_url("postgresql+psycopg://u@h/db") == "postgresql://u@h/db"
    multi = "postgresql://u@a:5432,b:5432/db?target_session_attrs=read-write"
    assert libpq_url(multi) == multi  # passed on as it is


def test_identity_is_stable_for_a_port_and_unique_for_port_zero():
    assert default_identity(22122) == default_identity(22122)
    assert default_identity(0) != default_identity(22122)
