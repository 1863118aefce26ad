"""`starlingpy store import --from DIR`: a journal spool and a Ruby Starling
spool copied into PostgreSQL, in order, and nothing twice on a second run."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from starlingpy.journal import SyncPolicy
from starlingpy.journal.store import JournalStore
from tests.pgschema import PG_URL, private_schema, schema_url
from tests.support import REPO

pytestmark = pytest.mark.db


def starling_add(data: bytes, expiry: int = 0) -> bytes:
    """One add record of a Ruby Starling journal."""
    return b"\x00" + struct.pack("<I", len(data) + 4) + struct.pack("<I", expiry) + data


def store_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "starlingpy", "store", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_import_a_journal_spool_and_a_starling_spool_once(tmp_path):
    psycopg = pytest.importorskip("psycopg")
    spool = tmp_path / "spool"
    journal = JournalStore.open(spool, sync=SyncPolicy.parse("always"))
    for i in range(5000):
        journal.put(b"jobs", b"job%04d" % i, i % 7, 0)
    journal.take([b"jobs"])  # job0000 is gone
    journal.open_item([b"jobs"], 1)  # job0001 open when the server stopped: comes back
    journal.commit()
    journal.close()
    starling = tmp_path / "starling"
    starling.mkdir()
    (starling / "mail").write_bytes(starling_add(b"m1") + starling_add(b"m2") + b"\x01"
                                    + starling_add(b"m3"))
    with private_schema() as schema:
        url = schema_url(schema)
        for source in (spool, starling):
            first = store_command("import", url, "--from", str(source))
            assert first.returncode == 0, first.stderr
            again = store_command("import", url, "--from", str(source))
            assert again.returncode == 0 and "already imported" in again.stdout
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')

            def items(queue: bytes) -> list[tuple]:
                return conn.execute("SELECT data, flags FROM starling_items WHERE queue = %s"
                                    " ORDER BY id", (queue,)).fetchall()

            assert items(b"jobs") == [(b"job%04d" % i, i % 7) for i in range(1, 5000)]
            assert items(b"mail") == [(b"m2", 0), (b"m3", 0)]


def test_import_from_a_missing_database_says_why(tmp_path):
    result = store_command("import", "postgresql://nobody@127.0.0.1:1/none", "--from",
                           str(tmp_path / "spool"))
    assert result.returncode == 1 and "cannot connect" in result.stderr


def test_store_init_is_idempotent():
    with private_schema() as schema:
        for _ in range(2):
            result = store_command("init", schema_url(schema))
            assert result.returncode == 0 and "store ready" in result.stdout, result.stderr


def test_a_spool_with_delayed_items_is_refused_whole(tmp_path):
    psycopg = pytest.importorskip("psycopg")
    spool = tmp_path / "spool"
    journal = JournalStore.open(spool, sync=SyncPolicy.parse("always"))
    journal.put(b"plain", b"p", 0, 0)
    journal.put(b"later", b"d", 0, 0, delay_ms=3_600_000)
    journal.commit()
    journal.close()
    with private_schema() as schema:
        refused = store_command("import", schema_url(schema), "--from", str(spool))
        assert refused.returncode == 1
        assert "'later' holds 1 delayed or unique items" in refused.stderr
        with psycopg.connect(PG_URL, autocommit=True) as conn:  # nothing was copied, not even 'plain'
            exists = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".starling_items',)).fetchone()[0]
            if exists:
                conn.execute(f'SET search_path TO "{schema}"')
                assert conn.execute("SELECT count(*) FROM starling_items").fetchone()[0] == 0
