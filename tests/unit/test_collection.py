"""The queue directory: locking, loading, creating, deleting, truncation and
atomic rewrites (with crashes injected at each step), damaged journals, and
the async parts (waiting for puts, group commit, background sync)."""

import logging
import os

import pytest
import trio
import trio.testing

import starlingpy.journal.store as collection_module
import starlingpy.journal.sync as sync_module
from starlingpy.journal import SyncPolicy
from starlingpy.journal.recovery import LOCK_NAME, StartupError
from tests.unit.conftest import drain, durable, open_c


@pytest.fixture
def qdir(tmp_path):
    return tmp_path / "spool"


# -- start-up ------------------------------------------------------------------

def test_sync_policy_parse():
    assert SyncPolicy.parse("always").mode == "always"
    assert SyncPolicy.parse("never").mode == "never"
    assert SyncPolicy.parse("250") == SyncPolicy("periodic", 250)
    assert str(SyncPolicy.parse("1000")) == "1000"
    for bad in ("", "sometimes", "-5", "0", "1.5"):
        with pytest.raises(ValueError):
            SyncPolicy.parse(bad)


def test_creates_the_directory_and_a_second_server_is_refused(qdir):
    c = open_c(qdir)
    assert qdir.is_dir() and (qdir / LOCK_NAME).exists()
    with pytest.raises(StartupError, match="in use by another server"):
        open_c(qdir)
    c.close()
    c.close()  # idempotent
    open_c(qdir).close()  # the lock was released


def test_lock_is_held_against_another_process(qdir):
    import subprocess
    import sys
    c = open_c(qdir)
    code = ("import sys\nfrom starlingpy.journal.store import JournalStore, StartupError\n"
            "from starlingpy.journal import SyncPolicy\n"
            "try:\n    JournalStore.open(sys.argv[1], sync=SyncPolicy.parse('never'))\n"
            "except StartupError as e:\n    print(e); sys.exit(3)\n")
    done = subprocess.run([sys.executable, "-c", code, str(qdir)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 3, done.stderr
    assert "in use" in done.stdout
    c.close()


def test_unusable_directory_is_a_startup_error(tmp_path):
    regular = tmp_path / "file"
    regular.write_text("not a directory")
    with pytest.raises(StartupError, match="cannot create"):
        open_c(regular / "spool")
    with pytest.raises(StartupError):
        open_c(regular)


def test_names_get_delete_and_stats(qdir):
    c = open_c(qdir)
    assert c.get(b"a") is None and c.names() == []
    qa, qb = c.get_or_create(b"a"), c.get_or_create(b"b/../../x")
    assert c.get_or_create(b"a") is qa
    qa.put(b"1", 0, 0)
    qb.put(b"2", 0, 0)
    c.commit()
    assert c.names() == [b"a", b"b/../../x"]
    stats = c.statistics()
    assert stats[b"a"].items == 1 and stats[b"b/../../x"].items == 1
    assert sorted(os.listdir(qdir)) == sorted([LOCK_NAME, "a.spq", "b%2F%2E%2E%2F%2E%2E%2Fx.spq"])
    assert c.delete(b"a") is True and c.delete(b"a") is False
    assert not (qdir / "a.spq").exists() and c.get(b"a") is None
    qa.put(b"ignored", 0, 0)  # a stale handle does no harm
    c.commit()
    assert c.get_or_create(b"a").statistics().items == 0
    c.close()
    c = open_c(qdir)
    assert c.names() == [b"a", b"b/../../x"]
    assert drain(c.get(b"b/../../x")) == [b"2"]
    c.close()


def test_flush_all(qdir):
    c = open_c(qdir)
    for name in (b"a", b"b"):
        c.get_or_create(name).put(b"x", 0, 0)
    c.flush_all()
    assert all(s.items == 0 for s in c.statistics().values())
    c.close()


def test_empty_queue_with_large_journal_is_truncated(qdir):
    c = open_c(qdir, max_journal_size=2000)
    q = c.get_or_create(b"t")
    for _ in range(40):
        q.put(b"x" * 100, 0, 0)
        c.commit()
    big = c.statistics()[q.name].logsize
    assert big > 2000
    for _ in range(39):
        q.take_nowait()
        c.commit()
    assert c.statistics()[q.name].logsize > big  # not empty yet: never truncated
    q.take_nowait()
    c.commit()
    assert c.statistics()[q.name].logsize == (qdir / "t.spq").stat().st_size < 100
    q.put(b"after", 0, 0)
    c.commit()
    c.abandon()
    c = open_c(qdir)
    assert drain(c.get(b"t")) == [b"after"]
    c.close()


# -- atomic rewrite, with a crash at every step ---------------------------------

class Crash(Exception):
    pass


@pytest.mark.parametrize("step", ["temp-written", "temp-synced", "renamed", "dir-synced"])
def test_rewrite_crash_at_each_step_leaves_a_whole_journal(qdir, step):
    c = open_c(qdir)
    q = c.get_or_create(b"r")
    for i in range(100):
        q.put(b"%03d" % i, i, 0)
    c.commit()
    for _ in range(90):
        q.take_nowait()
    owner = object()
    q.open_nowait(owner)  # 090 is open
    c.commit()
    before = (qdir / "r.spq").stat().st_size

    def failpoint(name):
        if name == step:
            raise Crash(name)

    with pytest.raises(Crash):
        c.compact(b"r", failpoint=failpoint)
    c.abandon()
    after = (qdir / "r.spq").stat().st_size
    assert after == before if step.startswith("temp") else after < before
    c = open_c(qdir)
    assert not any(name.endswith(".tmp") for name in os.listdir(qdir))
    q = c.get(b"r")
    items = []
    while (item := q.take_nowait()) is not None:
        items.append((item.data, item.flags))
    assert items == [(b"%03d" % i, i) for i in range(90, 100)]
    c.close()


def test_rewrite_keeps_appending_to_the_new_file(qdir):
    c = open_c(qdir)
    q = c.get_or_create(b"r")
    for i in range(50):
        q.put(b"%d" % i, 0, 0)
    for _ in range(45):
        q.take_nowait()
    c.compact(b"r")
    assert c.compact(b"missing") is False
    q.put(b"new", 0, 0)
    c.commit()
    c.abandon()
    c = open_c(qdir)
    assert drain(c.get(b"r")) == [b"45", b"46", b"47", b"48", b"49", b"new"]
    c.close()


def test_recovered_runs_survive_a_rewrite_and_restart(qdir):
    c = open_c(qdir)
    q = c.get_or_create(b"r")
    for i in range(10000):
        q.put(b"%05d" % i, i % 7, 0)
        if i % 100 == 99:
            c.commit()
    c.close()
    c = open_c(qdir)
    q = c.get(b"r")
    assert q.take_nowait().data == b"00000"
    c.compact(b"r")
    c.abandon()
    c = open_c(qdir)
    q = c.get(b"r")
    got = []
    while (item := q.take_nowait()) is not None:
        got.append((item.data, item.flags))
    assert got == [(b"%05d" % i, i % 7) for i in range(1, 10000)]
    c.close()


def test_close_compacts_a_journal_of_many_small_frames(qdir):
    c = open_c(qdir)
    q = c.get_or_create(b"f")
    for i in range(5000):
        q.put(b"%d" % i, 0, 0)
        c.commit()
    c.close()
    c = open_c(qdir)
    q = c.get(b"f")
    assert c.journal_of(b"f").frames < 10
    assert drain(q) == [b"%d" % i for i in range(5000)]
    c.close()


# -- damaged journals through the collection ----------------------------------

def write_three(qdir):
    c = open_c(qdir)
    q = c.get_or_create(b"d")
    for x in (b"one", b"two", b"three"):
        q.put(x, 0, 0)
        c.commit()
    c.close()
    return qdir / "d.spq"


def test_corrupt_journal_is_copied_aside_then_cut(qdir, caplog):
    path = write_three(qdir)
    original = bytearray(path.read_bytes())
    at = original.index(b"two")
    original[at] ^= 0xFF
    path.write_bytes(original)
    with caplog.at_level(logging.INFO, logger="starlingpy.journal"):
        c = open_c(qdir)
    assert (qdir / "d.spq.broken").read_bytes() == bytes(original)
    assert any(r.levelno == logging.ERROR and "checksum" in r.getMessage() for r in caplog.records)
    q = c.get(b"d")
    q.put(b"four", 0, 0)
    c.close()
    c = open_c(qdir)
    assert drain(c.get(b"d")) == [b"one", b"four"]
    c.close()


def test_torn_tail_is_cut_with_a_warning(qdir, caplog):
    path = write_three(qdir)
    data = path.read_bytes()
    path.write_bytes(data[:-2])
    with caplog.at_level(logging.WARNING, logger="starlingpy.journal"):
        c = open_c(qdir)
    assert any(r.levelno == logging.WARNING and "torn" in r.getMessage() for r in caplog.records)
    assert not any(name.endswith(".broken") for name in os.listdir(qdir))
    assert drain(c.get(b"d")) == [b"one", b"two"]
    c.close()


def test_journal_with_a_bad_header_is_kept_aside(qdir, caplog):
    path = write_three(qdir)
    path.write_bytes(b"garbage" * 10)
    with caplog.at_level(logging.ERROR, logger="starlingpy.journal"):
        c = open_c(qdir)
    assert (qdir / "d.spq.broken").read_bytes() == b"garbage" * 10
    assert c.get(b"d").statistics().items == 0
    c.close()


def test_journal_cut_inside_its_header_starts_empty(qdir):
    path = write_three(qdir)
    path.write_bytes(path.read_bytes()[:5])
    c = open_c(qdir)
    assert c.get(b"d").statistics().items == 0
    c.get(b"d").put(b"new", 0, 0)
    c.close()
    c = open_c(qdir)
    assert drain(c.get(b"d")) == [b"new"]
    c.close()


def test_long_hashed_names_come_back_from_the_header(qdir):
    name = b"\xff" * 250
    c = open_c(qdir)
    c.get_or_create(name).put(b"x", 0, 0)
    c.close()
    c = open_c(qdir)
    assert c.names() == [name]
    assert drain(c.get(name)) == [b"x"]
    c.close()


# -- async: waiting for puts, group commit, background ------------------------

async def test_wait_for_item_is_woken_by_a_put_on_any_queue(qdir):
    c = open_c(qdir)
    a, b = c.get_or_create(b"a"), c.get_or_create(b"b")
    woken = []

    async def waiter():
        await c.wait_for_item([a.name, b.name], trio.current_time() + 3600)
        woken.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert a.statistics().waiters == 1 and b.statistics().waiters == 1
        b.put(b"x", 0, 0)
    assert len(woken) == 1
    assert a.statistics().waiters == 0 and b.statistics().waiters == 0
    c.close()


async def test_wait_for_item_returns_at_once_if_items_are_there(qdir):
    c = open_c(qdir)
    q = c.get_or_create(b"a")
    q.put(b"x", 0, 0)
    with trio.fail_after(5):
        await c.wait_for_item([q.name], trio.current_time() + 3600)
    c.close()


async def test_wait_for_item_deadline(qdir, autojump_clock):
    c = open_c(qdir)
    q = c.get_or_create(b"a")
    start = trio.current_time()
    await c.wait_for_item([q.name], start + 5)
    assert trio.current_time() == pytest.approx(start + 5)
    assert q.statistics().waiters == 0
    c.close()


async def test_wait_for_item_is_cancel_safe(qdir):
    c = open_c(qdir)
    q = c.get_or_create(b"a")
    with trio.move_on_after(0.01):
        await c.wait_for_item([q.name], trio.current_time() + 3600)
    assert q.statistics().waiters == 0
    c.close()


async def test_group_commit_shares_fsync_rounds(qdir, monkeypatch):
    rounds = []
    real = sync_module._fsync_all

    def counting(files, dirs):
        rounds.append(len(files))
        real(files, dirs)

    monkeypatch.setattr(sync_module, "_fsync_all", counting)
    c = open_c(qdir, sync=SyncPolicy.parse("always"))
    queues = [c.get_or_create(b"q%d" % i) for i in range(4)]
    await durable(c)
    rounds.clear()
    acknowledged = []

    async def client(i):
        queues[i % 4].put(b"%d" % i, 0, 0)
        c.commit()
        await durable(c)
        acknowledged.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(client, i)
    assert sorted(acknowledged) == list(range(20))
    assert 1 <= len(rounds) <= 2 and sum(rounds) <= 8
    assert c._group.clean
    c.close()


async def test_group_commit_gathers_the_writers_the_last_round_released(qdir, monkeypatch):
    # Each writer writes again as soon as its previous write is durable.
    # Without gathering, rounds alternate between two halves of the writers
    # (about 2 rounds per write); with it, every round takes them all.
    rounds = []
    real = sync_module._fsync_all
    monkeypatch.setattr(sync_module, "_fsync_all", lambda f, d: (rounds.append(1), real(f, d)))
    c = open_c(qdir, sync=SyncPolicy.parse("always"))
    queue = c.get_or_create(b"q")
    await durable(c)
    rounds.clear()

    async def writer(i):
        for n in range(10):
            queue.put(b"%d-%d" % (i, n), 0, 0)
            c.commit()
            await durable(c)

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(writer, i)
    assert queue.statistics().items == 80
    assert len(rounds) <= 12
    c.close()


async def test_a_failed_fsync_round_is_the_waiters_error_and_the_next_round_retries(
        qdir, monkeypatch):
    import errno
    import threading

    from starlingpy.store import StoreError

    real = sync_module._fsync_all
    synced_in = []

    def failing(files, dirs):
        synced_in.append(threading.current_thread().name)
        raise OSError(errno.EIO, "injected")

    c = open_c(qdir, sync=SyncPolicy.parse("always"))
    await durable(c)
    monkeypatch.setattr(sync_module, "_fsync_all", failing)
    c.get_or_create(b"a").put(b"x", 0, 0)
    with pytest.raises(StoreError) as caught:
        await durable(c)
    assert caught.value.reply == collection_module.WRITE_FAILED
    assert synced_in == ["starlingpy-fsync"]  # never on the event loop's thread
    assert not c._group.clean  # kept for the next round
    monkeypatch.setattr(sync_module, "_fsync_all", real)
    await durable(c)
    assert c._group.clean
    c.close()
    assert not any(t.name == "starlingpy-fsync" for t in threading.enumerate())


async def test_wait_durable_without_always_does_not_sync(qdir, monkeypatch):
    c = open_c(qdir, sync=SyncPolicy.parse("1000"))
    rounds = []
    monkeypatch.setattr(sync_module, "_fsync_all", lambda f, d: rounds.append(1))
    c.get_or_create(b"a").put(b"x", 0, 0)
    c.commit()
    await durable(c)
    assert rounds == [] and not c._group.clean
    c.close()


async def test_background_syncs_periodically_and_compacts(qdir, monkeypatch):
    monkeypatch.setattr(collection_module, "COMPACT_CHECK_SECONDS", 0.01)
    c = open_c(qdir, sync=SyncPolicy.parse("10"), max_journal_size=1000)
    q = c.get_or_create(b"a")
    for _ in range(100):
        q.put(b"x" * 50, 0, 0)
        c.commit()
    for _ in range(95):
        q.take_nowait()
        c.commit()
    big = c.statistics()[q.name].logsize
    async with trio.open_nursery() as nursery:
        await nursery.start(c.run_background)
        with trio.fail_after(30):
            while not c._group.clean or c.statistics()[q.name].logsize >= big:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert c.statistics()[q.name].logsize < big // 4
    c.abandon()
    c = open_c(qdir)
    assert c.get(b"a").statistics().items == 5
    c.close()


@pytest.mark.parametrize("small_blocks", [False, True])
async def test_background_rewrite_carries_over_what_happens_meanwhile(qdir, monkeypatch,
                                                                      small_blocks):
    import threading

    import starlingpy.blocks as blocks_module
    import starlingpy.queue as queue_module
    if small_blocks:  # sealed blocks, some thawed, are captured while the queue moves on
        monkeypatch.setattr(queue_module, "SEAL_ITEMS", 16)
        monkeypatch.setattr(blocks_module, "RUN_BYTES", 50)
    release = threading.Event()
    real = collection_module._write_temp

    def gated(*args):
        assert release.wait(30)
        return real(*args)

    monkeypatch.setattr(collection_module, "_write_temp", gated)
    c = open_c(qdir)
    q = c.get_or_create(b"a")
    for i in range(200):
        q.put(b"%03d" % i, 0, 0)
    c.commit()
    c.close()
    c = open_c(qdir)  # the first 200 are now a recovered block
    q = c.get(b"a")
    for i in range(200, 300):
        q.put(b"%03d" % i, 0, 0)
    for _ in range(150):
        q.take_nowait()
    c.commit()
    inode = (qdir / "a.spq").stat().st_ino
    async with trio.open_nursery() as nursery:
        nursery.start_soon(c.journal_of(b"a").rewrite_in_background)
        await trio.testing.wait_all_tasks_blocked()
        assert c.compact(b"a") is False  # one rewrite at a time
        for _ in range(10):
            q.take_nowait()
        q.put(b"new", 0, 0)
        owner = object()
        q.open_nowait(owner)  # 160
        c.commit()
        release.set()
    assert (qdir / "a.spq").stat().st_ino != inode
    assert not any(n.endswith(".tmp") for n in os.listdir(qdir))
    q.take_nowait()  # 161
    c.commit()
    c.abandon()
    c = open_c(qdir)
    expected = [b"%03d" % i for i in [160] + list(range(162, 300))] + [b"new"]
    assert drain(c.get(b"a")) == expected
    c.close()


async def test_background_compacts_a_fragmented_journal(qdir, monkeypatch):
    monkeypatch.setattr(collection_module, "COMPACT_CHECK_SECONDS", 0.01)
    monkeypatch.setattr(collection_module, "BACKGROUND_FRAGMENTED_FRAMES", 1000)
    c = open_c(qdir)
    q = c.get_or_create(b"f")
    for i in range(2000):
        q.put(b"%d" % i, 0, 0)
        c.commit()
    async with trio.open_nursery() as nursery:
        await nursery.start(c.run_background)
        with trio.fail_after(30):
            while c.journal_of(b"f").frames > 10:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    c.abandon()
    c = open_c(qdir)
    assert drain(c.get(b"f")) == [b"%d" % i for i in range(2000)]
    c.close()


HOSTILE = [b"../x", b"/etc/x", b"a/../../x", b"..", b".hidden", b"\xff\x80", b"." * 250,
           b".starlingpy.lock", b".starling-legacy", b"x.spq.tmp", b"x.spq"]


def test_hostile_names_never_leave_the_directory(tmp_path):
    qdir = tmp_path / "spool"
    c = open_c(qdir)
    for i, name in enumerate(HOSTILE):
        c.get_or_create(name).put(b"%d" % i, 0, 0)
    c.close()
    assert os.listdir(tmp_path) == ["spool"]
    assert all((qdir / f).is_file() for f in os.listdir(qdir))
    c = open_c(qdir)
    assert c.names() == sorted(HOSTILE)
    for i, name in enumerate(HOSTILE):
        assert drain(c.get(name)) == [b"%d" % i]
        assert c.delete(name)
    c.close()
    assert sorted(os.listdir(qdir)) == [LOCK_NAME]


def test_large_journal_loads_through_the_mapped_path(qdir):
    c = open_c(qdir)
    q = c.get_or_create(b"big")
    for i in range(15000):
        q.put(b"%05d" % i + b"x" * 95, i, 0 if i % 2 else 2_000_000_000 + i)
        if i % 37 == 0:
            c.commit()
    q.take_nowait()
    owner = object()
    q.open_nowait(owner)
    c.commit()
    c.abandon()
    assert (qdir / "big.spq").stat().st_size > 1 << 20
    c = open_c(qdir, clock=lambda: 1_000_000_000.0)
    q = c.get(b"big")
    assert q.statistics().items == 14999
    got = []
    while (item := q.take_nowait()) is not None:
        got.append((item.data[:5], item.flags, item.expiry))
    assert got == [(b"%05d" % i, i, 0.0 if i % 2 else 2_000_000_000.0 + i)
                   for i in range(1, 15000)]
    c.close()


def test_any_crash_point_leaves_a_prefix_of_acknowledged_items(qdir):
    c = open_c(qdir)
    q = c.get_or_create(b"p")
    sizes = []
    for i in range(30):
        q.put(b"item%02d" % i, 0, 0)
        c.commit()
        sizes.append((qdir / "p.spq").stat().st_size)
    c.close()
    whole = (qdir / "p.spq").read_bytes()
    for cut in range(sizes[0] - 30, len(whole) + 1, 7):
        (qdir / "p.spq").write_bytes(whole[:cut])
        c = open_c(qdir)
        got = drain(c.get(b"p"))
        acknowledged = sum(1 for size in sizes if size <= cut)
        assert got == [b"item%02d" % i for i in range(acknowledged)], cut
        c.abandon()


async def test_reader_parked_on_a_deleted_queue_hears_the_new_one(qdir):
    c = open_c(qdir)
    old = c.get_or_create(b"a")
    old.put(b"gone", 0, 0)
    old.take_nowait()
    woken = []

    async def waiter():
        await c.wait_for_item([old.name], trio.current_time() + 3600)
        woken.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        old.put(b"x", 0, 0)  # wakes it; then delete before it runs again
        c.delete(b"a")
    assert woken == [True]
    assert old.statistics().items == 0  # a deleted queue holds nothing: no busy retry

    woken.clear()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        new = c.get_or_create(b"a")
        assert new.statistics().waiters == 1
        new.put(b"y", 0, 0)
    assert woken == [True]
    assert c.get(b"a").take_nowait().data == b"y"
    c.close()


async def test_background_rewrite_of_a_queue_deleted_meanwhile_leaves_nothing(qdir, monkeypatch):
    import threading

    release = threading.Event()
    real = collection_module._write_temp
    monkeypatch.setattr(collection_module, "_write_temp",
                        lambda *args: (release.wait(30), real(*args))[1])
    c = open_c(qdir)
    q = c.get_or_create(b"a")
    q.put(b"x", 0, 0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(c.journal_of(b"a").rewrite_in_background)
        await trio.testing.wait_all_tasks_blocked()
        assert c.delete(b"a")
        release.set()
    assert sorted(os.listdir(qdir)) == [LOCK_NAME]
    c.close()
