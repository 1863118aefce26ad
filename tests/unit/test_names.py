"""Queue names to file names: reversible, and never a path outside the directory."""

import os

import pytest

from starlingpy.names import (
    MAX_FILENAME,
    SUFFIX,
    is_journal_filename,
    queue_filename,
    queue_name_from_filename,
)

HOSTILE = [
    b"../x", b"/etc/x", b"a/../../x", b"..", b".", b".hidden", b"x/", b"\\..\\x",
    b"\xff\xfe", b"caf\xc3\xa9", b"a b", b"%2E%2E", b"x.spq", b"x.spq.tmp", b"nul\x00byte",
    b"-", b"_", b"~", b"a|b", b"a+b", b"CON", b"." * 250, b"\xff" * 250, b"q" * 250,
]


@pytest.mark.parametrize("name", HOSTILE + [b"plain", b"work_queue-1"])
def test_filename_is_one_safe_component_and_reverses(name, tmp_path):
    filename = queue_filename(name)
    assert "/" not in filename and "\x00" not in filename
    assert not filename.startswith(".")
    assert filename.endswith(SUFFIX)
    assert len(filename.encode()) <= MAX_FILENAME
    assert is_journal_filename(filename)
    # Really create it: it lands directly inside the directory.
    path = tmp_path / filename
    path.write_bytes(b"")
    assert os.listdir(tmp_path) == [filename]
    assert path.resolve().parent == tmp_path.resolve()
    back = queue_name_from_filename(filename)
    assert back == name or (back is None and filename.startswith("%%"))


def test_plain_names_stay_readable():
    assert queue_filename(b"jobs") == "jobs.spq"
    assert queue_filename(b"a.b") == "a%2Eb.spq"
    assert queue_filename(b"\x80") == "%80.spq"


def test_long_names_are_hashed_and_distinct():
    a, b = queue_filename(b"\xff" * 250), queue_filename(b"\xff" * 249 + b"\xfe")
    assert a != b and a.startswith("%%") and b.startswith("%%")
    assert queue_name_from_filename(a) is None


@pytest.mark.parametrize("filename", [
    "jobs", "jobs.spq.tmp", "jobs.spq.broken", "%2e.spq", "a.b.spq", "%ZZ.spq", ".spq",
    "%%abc.spq", ".starlingpy.lock", "%6A.spq",  # %6A is 'j': not the canonical spelling
])
def test_foreign_files_are_not_ours(filename):
    assert queue_name_from_filename(filename) is None
    assert not is_journal_filename(filename)


def test_empty_name_is_refused():
    with pytest.raises(ValueError):
        queue_filename(b"")
