"""Ruby Starling spools: the reader, and taking a spool over (exactly once)."""

import logging
import os
import shutil
import struct

import pytest

from starlingpy.journal.legacy import parse_legacy
from starlingpy.journal.recovery import LEGACY_DIR
from tests.unit.conftest import drain, open_c


def add(data: bytes, expiry: int = 0) -> bytes:
    return b"\x00" + struct.pack("<I", len(data) + 4) + struct.pack("<I", expiry) + data


REMOVE = b"\x01"


def test_parse_adds_and_removes():
    parsed = parse_legacy(add(b"a") + add(b"b", 99) + REMOVE + add(b"c") + add(b""))
    assert parsed.items == [(99, b"b"), (0, b"c"), (0, b"")] and parsed.cut == 0


@pytest.mark.parametrize("cut", range(1, 13))
def test_parse_ignores_a_record_cut_short(cut):
    whole = add(b"a") + add(b"second")
    parsed = parse_legacy(whole[:-cut])
    assert parsed.items == [(0, b"a")] and parsed.cut == len(add(b"second")) - cut


@pytest.mark.parametrize("buf", [b"hello world", b"\x02", b"\x00\x02\x00\x00\x00xx" + add(b"a")])
def test_parse_refuses_other_files(buf):
    assert parse_legacy(buf) is None


def test_remove_on_empty_is_harmless():
    assert parse_legacy(REMOVE + add(b"a")).items == [(0, b"a")]


def test_spool_is_taken_over_once(tmp_path, caplog):
    qdir = tmp_path / "spool"
    qdir.mkdir()
    (qdir / "jobs").write_bytes(add(b"1") + add(b"2") + REMOVE + add(b"3") + add(b"4")[:-1])
    (qdir / "mail.out").write_bytes(add(b"m", 2_000_000_000))
    (qdir / "README").write_text("not a queue")
    with caplog.at_level(logging.INFO, logger="starlingpy.journal"):
        c = open_c(qdir, clock=lambda: 1_900_000_000.0)
    assert c.names() == [b"jobs", b"mail.out"]
    assert any("cut short" in r.getMessage() for r in caplog.records)
    assert any("README" in r.getMessage() for r in caplog.records)
    assert sorted(os.listdir(qdir / LEGACY_DIR)) == ["jobs", "mail.out"]
    assert (qdir / "README").exists() and not (qdir / "jobs").exists()
    assert c.get(b"mail.out").peek_nowait().expiry == 2_000_000_000
    assert c.get(b"jobs").statistics().items == 2
    c.close()
    c = open_c(qdir)  # a restart does not duplicate anything
    assert drain(c.get(b"jobs")) == [b"2", b"3"]
    assert drain(c.get(b"mail.out")) == [b"m"]
    c.close()


def test_crash_between_import_and_move_aside_does_not_duplicate(tmp_path):
    qdir = tmp_path / "spool"
    qdir.mkdir()
    spool = add(b"a") + add(b"b")
    (qdir / "jobs").write_bytes(spool)
    open_c(qdir).close()
    # As if the process died after our journal was synced but before the
    # legacy file was moved: it is back where it was.
    shutil.move(qdir / LEGACY_DIR / "jobs", qdir / "jobs")
    c = open_c(qdir)
    assert drain(c.get(b"jobs")) == [b"a", b"b"]
    assert not (qdir / "jobs").exists()
    assert sorted(os.listdir(qdir / LEGACY_DIR)) == ["jobs"]
    c.close()


def test_legacy_items_join_an_existing_queue_after_its_items(tmp_path):
    qdir = tmp_path / "spool"
    c = open_c(qdir)
    c.get_or_create(b"jobs").put(b"ours", 0, 0)
    c.close()
    (qdir / "jobs").write_bytes(add(b"theirs"))
    c = open_c(qdir)
    assert drain(c.get(b"jobs")) == [b"ours", b"theirs"]
    c.close()


def test_hostile_legacy_names_stay_inside(tmp_path):
    qdir = tmp_path / "spool"
    qdir.mkdir()
    (qdir / "x..%2Fescape").write_bytes(add(b"x"))
    (qdir / "\udcff\udcfe").write_bytes(add(b"y"))  # undecodable bytes in the name
    (qdir / ".hidden").write_bytes(add(b"z"))       # dotfiles are never Starling's
    (tmp_path / "outside").write_bytes(add(b"o"))
    (qdir / "link").symlink_to(tmp_path / "outside")
    (qdir / "dir.spq").mkdir()
    c = open_c(qdir)
    assert c.names() == [b"x..%2Fescape", b"\xff\xfe"]
    assert sorted(os.listdir(tmp_path)) == ["outside", "spool"]
    assert (tmp_path / "outside").read_bytes() == add(b"o")
    assert (qdir / ".hidden").exists() and (qdir / "link").is_symlink()
    c.close()


def test_large_foreign_file_is_not_read(tmp_path, caplog):
    qdir = tmp_path / "spool"
    qdir.mkdir()
    (qdir / "notes.txt").write_bytes(b"#" * 100_000)
    with caplog.at_level(logging.WARNING, logger="starlingpy.journal"):
        c = open_c(qdir)
    assert c.names() == [] and (qdir / "notes.txt").exists()
    assert any("notes.txt" in r.getMessage() for r in caplog.records)
    c.close()
