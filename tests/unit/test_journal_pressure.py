"""The journal store when the system says no: ENOSPC, EIO and EMFILE
injected at the system-call boundary (os.writev, os.fsync, os.fdatasync, fallocate,
os.open). The store answers with a StoreError or waits for space; it never
loses an acknowledged item and never keeps half of a failed set."""

from __future__ import annotations

import errno
import os

import pytest
import trio

import starlingpy.journal.file as file_module
from starlingpy.journal import SyncPolicy
from starlingpy.journal.store import OUT_OF_SPACE, TOO_MANY_FILES, WRITE_FAILED
from starlingpy.store import StoreError
from tests.unit.conftest import drain, open_c

REAL_WRITEV = os.writev


def failing(code: int):
    def call(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return call


@pytest.fixture
def qdir(tmp_path):
    return tmp_path / "spool"


def test_a_set_that_cannot_get_disk_space_is_refused_before_anything_changes(qdir, monkeypatch):
    c = open_c(qdir)
    assert c.put(b"q", b"kept", 0, 0)
    c.commit()
    c.journal_of(b"q").file.reserved_end = c.journal_of(b"q").file.size  # nothing set aside
    monkeypatch.setattr(file_module, "fallocate", failing(errno.ENOSPC))
    with pytest.raises(StoreError) as caught:
        c.put(b"q", b"x" * 10_000, 0, 0)
    assert caught.value.reply == OUT_OF_SPACE
    assert c.statistics()[b"q"].items == 1 and c.statistics()[b"q"].total_items == 1
    c.commit()
    monkeypatch.undo()
    assert c.put(b"q", b"after", 0, 0)  # space is back: sets work again, no restart
    c.commit()
    c.abandon()
    assert drain(open_c(qdir).get(b"q")) == [b"kept", b"after"]


def test_a_new_queue_on_a_full_disk_is_refused_and_leaves_no_file(qdir, monkeypatch):
    c = open_c(qdir)
    monkeypatch.setattr(file_module, "write_all", failing(errno.ENOSPC))
    with pytest.raises(StoreError) as caught:
        c.put(b"new", b"x", 0, 0)
    assert caught.value.reply == OUT_OF_SPACE
    assert not c.exists(b"new") and sorted(os.listdir(qdir)) == [".starlingpy.lock"]
    c.close()


def test_takes_on_a_full_disk_wait_for_space_and_are_written_when_it_returns(qdir, monkeypatch):
    c = open_c(qdir)
    for i in range(5):
        c.put(b"q", b"%d" % i, 0, 0)
    c.commit()
    monkeypatch.setattr(os, "writev", failing(errno.ENOSPC))
    assert c.take([b"q"]).data == b"0"
    assert c.take([b"q"]).data == b"1"
    assert c.commit() is None  # no error: the reply goes out, the removal waits
    assert c.journal_of(b"q").deferred
    monkeypatch.undo()
    c.commit()  # space is back
    assert not c.journal_of(b"q").deferred
    c.abandon()
    assert drain(open_c(qdir).get(b"q")) == [b"2", b"3", b"4"]


def test_a_crash_while_takes_wait_for_space_hands_those_items_out_again(qdir, monkeypatch):
    c = open_c(qdir)
    for i in range(3):
        c.put(b"q", b"%d" % i, 0, 0)
    c.commit()
    monkeypatch.setattr(os, "writev", failing(errno.ENOSPC))
    assert c.take([b"q"]).data == b"0"
    c.commit()
    c.abandon()  # crash before space returned: at least once, never lost
    monkeypatch.undo()
    assert drain(open_c(qdir).get(b"q")) == [b"0", b"1", b"2"]


def test_an_io_error_on_write_is_the_commands_error_and_is_retried(qdir, monkeypatch):
    c = open_c(qdir)
    c.put(b"q", b"a", 0, 0)
    c.commit()
    monkeypatch.setattr(os, "writev", failing(errno.EIO))
    c.put(b"q", b"b", 0, 0)
    with pytest.raises(StoreError) as caught:
        c.commit()
    assert caught.value.reply == WRITE_FAILED
    size = c.journal_of(b"q").file.size
    assert os.path.getsize(qdir / "q.spq") == size  # nothing half-written stays on disk
    monkeypatch.undo()
    c.commit()  # retried
    c.abandon()
    assert drain(open_c(qdir).get(b"q")) == [b"a", b"b"]


async def test_background_survives_failing_fsyncs_and_writes_deferred_removals(qdir, monkeypatch):
    c = open_c(qdir, sync=SyncPolicy.parse("10"))
    c.put(b"q", b"a", 0, 0)
    c.put(b"q", b"b", 0, 0)
    c.commit()
    fsyncs = []
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), failing(errno.EIO)()))
    monkeypatch.setattr(os, "fdatasync", lambda fd: (fsyncs.append(fd), failing(errno.EIO)()))
    monkeypatch.setattr(os, "writev", failing(errno.ENOSPC))
    c.take([b"q"])
    c.commit()
    async with trio.open_nursery() as nursery:
        await nursery.start(c.run_background)
        with trio.fail_after(10):
            while len(fsyncs) < 3:  # several periods went by, each fsync failing
                await trio.sleep(0.01)
        monkeypatch.setattr(os, "writev", REAL_WRITEV)  # space is back
        with trio.fail_after(10):
            while c.journal_of(b"q").deferred:  # the background wrote the removal
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    monkeypatch.undo()
    c.abandon()
    assert drain(open_c(qdir).get(b"q")) == [b"b"]


@pytest.mark.parametrize("step", ["temp-written", "temp-synced", "renamed"])
def test_a_failed_rewrite_step_keeps_a_whole_journal(qdir, step):
    c = open_c(qdir)
    for i in range(10):
        c.put(b"q", b"%d" % i, 0, 0)
    for _ in range(5):
        c.take([b"q"])
    c.commit()

    def fail(at):
        if at == step:
            raise OSError(errno.ENOSPC, "no space")

    with pytest.raises(OSError):
        c.compact(b"q", failpoint=fail)
    assert not [n for n in os.listdir(qdir) if n.endswith(".tmp")] or step == "renamed"
    c.put(b"q", b"after", 0, 0)
    c.commit()
    c.abandon()
    assert drain(open_c(qdir).get(b"q")) == [b"5", b"6", b"7", b"8", b"9", b"after"]


def test_more_queues_than_descriptors(qdir):
    c = open_c(qdir, max_open_journals=4)
    for i in range(20):
        c.put(b"q%d" % i, b"item%d" % i, 0, 0)
        c.commit()
        assert c.open_journals() <= 4
    for i in range(20):  # every queue is written again: descriptors move round
        assert c.take([b"q%d" % i]).data == b"item%d" % i
        c.put(b"q%d" % i, b"again%d" % i, 0, 0)
        c.commit()
        assert c.open_journals() <= 4
    c.close()
    c = open_c(qdir, max_open_journals=3)  # a restart with more files than descriptors
    assert c.open_journals() <= 3
    assert [drain(c.get(b"q%d" % i)) for i in range(20)] == [[b"again%d" % i] for i in range(20)]
    c.close()


def test_out_of_descriptors_is_answered(qdir, monkeypatch):
    c = open_c(qdir)
    real_open = os.open

    def no_descriptors(path, *args, **kwargs):
        if str(path).endswith(".spq"):
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_descriptors)
    with pytest.raises(StoreError) as caught:
        c.put(b"q", b"x", 0, 0)
    assert caught.value.reply == TOO_MANY_FILES
    monkeypatch.undo()
    assert c.put(b"q", b"x", 0, 0)
    c.close()


def test_max_queues(qdir):
    c = open_c(qdir, max_queues=3)
    for name in (b"a", b"b", b"c"):
        assert c.put(name, b"x", 0, 0)
    with pytest.raises(StoreError) as caught:
        c.put(b"d", b"x", 0, 0)
    assert caught.value.reply == b"SERVER_ERROR too many queues"
    assert c.put(b"a", b"more", 0, 0)  # existing queues still take items
    assert c.delete(b"a") and c.put(b"d", b"x", 0, 0)  # room again
    c.close()


def test_journals_are_private_and_never_followed_through_a_link(tmp_path):
    qdir = tmp_path / "spool"
    c = open_c(qdir)
    c.put(b"q", b"secret", 0, 0)
    c.commit()
    assert os.stat(qdir / "q.spq").st_mode & 0o777 == 0o600
    assert os.stat(qdir).st_mode & 0o777 == 0o700
    target = tmp_path / "precious"
    target.write_bytes(b"do not touch")
    os.symlink(target, qdir / "planted.spq")
    with pytest.raises(StoreError):
        c.put(b"planted", b"x", 0, 0)
    assert target.read_bytes() == b"do not touch"
    c.close()
    c = open_c(qdir)  # the link is not loaded either
    assert not c.exists(b"planted") and target.read_bytes() == b"do not touch"
    c.close()


def test_names_that_differ_in_case_never_share_a_file(qdir):
    c = open_c(qdir)
    c.put(b"Foo", b"upper", 0, 0)
    c.put(b"foo", b"lower", 0, 0)
    c.commit()
    files = sorted(n for n in os.listdir(qdir) if n.endswith(".spq"))
    assert len({n.lower() for n in files}) == 2
    c.close()
    c = open_c(qdir)
    assert drain(c.get(b"Foo")) == [b"upper"] and drain(c.get(b"foo")) == [b"lower"]
    c.close()


def test_journals_named_by_older_versions_are_renamed_and_kept(qdir):
    c = open_c(qdir)
    c.put(b"Jobs", b"old", 0, 0)
    c.close()
    (current,) = [n for n in os.listdir(qdir) if n.endswith(".spq")]
    os.rename(qdir / current, qdir / "Jobs.spq")  # how older versions named it
    c = open_c(qdir)
    assert drain(c.get(b"Jobs")) == [b"old"]
    assert not (qdir / "Jobs.spq").exists() and (qdir / current).exists()
    c.close()


def test_a_journal_let_go_for_another_is_synced_first(qdir, monkeypatch):
    # A round in flight would find its descriptor gone and vouch for writes
    # it never synced: so the store syncs before it lets a descriptor go.
    c = open_c(qdir, sync=SyncPolicy.parse("10"), max_open_journals=2)
    c.put(b"a", b"x", 0, 0)
    c.put(b"b", b"y", 0, 0)
    c.commit()
    synced = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd)))
    fd_of_a = c.journal_of(b"a").file.fd
    c.put(b"c", b"z", 0, 0)  # a third journal: the least recently written (a) is let go
    assert c.journal_of(b"a").file.fd is None and fd_of_a in synced
    c.close()


def test_already_expired_sets_do_not_grow_the_space_set_aside(qdir):
    c = open_c(qdir)
    c.put(b"q", b"kept", 0, 0)
    c.commit()
    for _ in range(20_000):  # each is counted, not kept: no record, no disk space
        assert c.put(b"q", b"x" * 1000, 0, -1) is True
    assert c.journal_of(b"q").file.spare < 1 << 20
    assert c.statistics()[b"q"].expired_items == 20_000
    c.close()
