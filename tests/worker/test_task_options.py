"""Task options against a real server: delayed pushes, retries with
back-off, timeouts (a hanging task, a task stuck in C code), unique pushes.
Workers run as `starlingpy work` subprocesses where a process may die."""

from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime, timedelta

import pytest

from starlingpy.worker import Retry, Worker
from starlingpy.worker.tasks import TaskMessage
from tests.support import wait_until
from tests.worker.test_processes import WorkerProcess, marks_matching, pid_of


def stat(client, name: str) -> int:
    return int(next(iter(client.stats().values())).get(name, 0))


def test_retry_intervals_and_exponential_jitter():
    fixed = Retry(max_attempts=5, intervals=[10, 60, 300])
    assert [fixed.delay(n) for n in (1, 2, 3, 4)] == [10, 60, 300, 300]
    assert Retry(max_attempts=2).delay(1) == 0
    exp = Retry.exponential(max_attempts=8, initial=2, maximum=20, jitter=0.5)
    rng = random.Random(7)
    delays = [exp.delay(n, rng) for n in range(1, 7)]
    for n, delay in enumerate(delays, 1):
        full = min(20, 2 * 2 ** (n - 1))
        assert full / 2 <= delay <= full
    assert len(set(delays)) == len(delays)  # jittered: not the bare doubling
    with pytest.raises(ValueError):
        Retry(max_attempts=0)
    with pytest.raises(ValueError):
        Retry(intervals=[-1])


def test_push_in_and_push_at_are_delayed_items(tasks, client, marks):
    tasks.get("note").push_in(3600, "later")
    tasks.get("note").push_at(datetime.now(UTC) + timedelta(hours=2), "at")
    tasks.get("note").push_at(datetime(2000, 1, 1, tzinfo=UTC), "past")  # at once
    assert stat(client, "queue_fast_delayed_items") == 2
    assert stat(client, "queue_fast_items") == 1
    with pytest.raises(ValueError):
        tasks.get("note").push_in(-1, "x")


def test_failed_attempts_come_back_after_their_intervals(tasks, client, marks):
    tasks.get("backing_off").push("b")
    worker = Worker(tasks, ["fast"], client=client, wait_timeout=0.2)
    assert worker.work(max_messages=3) == 3  # attempts 1, 2 and 3 (blocking gets)
    times = sorted(float(name.split("-", 2)[2]) for name in marks_matching(marks, "attempt-b-"))
    assert len(times) == 3
    assert times[1] - times[0] >= 0.3 - 0.01 and times[2] - times[1] >= 0.6 - 0.01  # never early
    assert worker.statistics().retried == 2 and worker.statistics().failed == 1
    record = json.loads(client.get_first(["failed"]).raw)
    assert record["message"]["attempt"] == 3


def test_a_retry_waits_as_a_delayed_item(tasks, client, marks):
    tasks.get("backing_off").push("d")
    Worker(tasks, ["fast"], client=client).handle(client.get_first(["fast"]))
    assert stat(client, "queue_fast_delayed_items") == 1 and stat(client, "queue_fast_items") == 0
    retry = TaskMessage.decode(client.get_first(["fast"], timeout=10).raw)
    assert retry.attempt == 2


def test_a_hanging_task_is_timed_out_and_the_worker_goes_on(server, client, tasks, marks):
    tasks.get("hang").push("h")
    tasks.get("note").push("after")
    worker = WorkerProcess(server, marks, "--instances", "1", "--queues", "timed,fast")
    try:
        wait_until(lambda: marks_matching(marks, "note-after-"), timeout=30,
                   message="the next message handled after the hanging one")
        hung, after = marks_matching(marks, "hang-h-")[0], marks_matching(marks, "note-after-")[0]
        assert pid_of(hung) == pid_of(after)  # the same process went on
        record = json.loads(client.get_first(["failed"], timeout=10).raw)
        assert record["reason"] == "failed" and "TaskTimeout" in record["error"]
    finally:
        worker.signal(15)
        worker.wait()



def test_a_task_stuck_in_c_costs_one_process_per_attempt_and_its_message_comes_back(
        server, client, tasks, marks, monkeypatch):
    monkeypatch.setenv("STARLINGPY_TASK_HARD_GRACE", "1")
    tasks.get("spin_in_c").push("c")  # two attempts, each stuck in C
    pool = WorkerProcess(server, marks, "--instances", "2", "--queues", "timed,fast")
    try:
        record = json.loads(client.get_first(["failed"], timeout=60).raw)
        assert record["message"]["attempt"] == 2 and "died in it" in record["error"]
        spins = marks_matching(marks, "spin-c-")
        assert len(spins) == 2 and len({pid_of(m) for m in spins}) == 2  # a process per attempt
        wait_until(lambda: not any(_alive(pid_of(m)) for m in spins), message="stuck processes gone")
        tasks.get("note").push("still-serving")  # the pool replaced them
        wait_until(lambda: marks_matching(marks, "note-still-serving-"), timeout=30,
                   message="the pool serving again")
        assert stat(client, "queue_timed_items") == 0
        assert stat(client, "queue_timed_open_transactions") == 0
    finally:
        pool.signal(15)
        pool.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_unique_pushes_from_eight_threads_give_one_message(tasks, client, marks):
    ids: list[str] = []
    start = threading.Barrier(8)

    def push() -> None:
        start.wait()
        ids.append(tasks.get("grade_once").push(42))

    threads = [threading.Thread(target=push) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 8 and len(set(ids)) == 1  # every push answered with the one id
    assert stat(client, "queue_fast_items") == 1
    assert tasks.get("grade_once").push(43) != ids[0]
    worker = Worker(tasks, ["fast"], client=client)
    with client.reliable("fast") as message:
        assert TaskMessage.decode(message.raw).id == ids[0]
        assert tasks.get("grade_once").push(42) == ids[0]  # running: still a no-op
        worker.handle(message)
    assert tasks.get("grade_once").push(42) == ids[0]  # done: stored again (same key, same id)
    assert stat(client, "queue_fast_items") == 2  # 43 and the new 42


def test_a_failure_record_of_a_non_json_message_has_an_id_to_drop_it_by(tasks, client, marks):
    from starlingpy.worker.failed import drop_failed, list_failed

    client.set("fast", b"\xff not json")
    client.set("failed", b"not even a record")
    Worker(tasks, ["fast"], client=client).work(burst=True)
    items = list_failed(client)
    assert [item.record.reason if item.record else None for item in items] == [None, "undecodable"]
    assert all(item.id for item in items) and items[0].id != items[1].id
    assert list_failed(client)[1].id == items[1].id  # the same record, the same id
    assert [item.id for item in drop_failed(client, ids=[items[1].id])] == [items[1].id]
    assert [item.id for item in drop_failed(client, ids=[items[0].id])] == [items[0].id]
    assert list_failed(client) == []


def test_a_worker_serves_again_soon_after_its_server_restarts(server, client, tasks, marks):
    worker = WorkerProcess(server, marks, "--instances", "1", "--queues", "fast")
    try:
        tasks.get("note").push("before")
        wait_until(lambda: marks_matching(marks, "note-before-"), timeout=30, message="first")
        server.kill()
        server.restart()
        tasks.get("note").push("after")
        # Back-off at most 2 s plus the client's 1 s dead-server wait: well inside this.
        wait_until(lambda: marks_matching(marks, "note-after-"), timeout=15,
                   message="the worker back after the restart")
    finally:
        worker.signal(15)
        worker.wait()


def test_the_attempt_ledger_knows_an_attempt_started_before(client):
    from starlingpy.worker.limits import AttemptLedger

    ledger = AttemptLedger(client, "ledger_test")
    message = TaskMessage(task="t", args=(1,))
    assert ledger.first_start(message) is True
    assert ledger.first_start(message) is False  # given back after its worker died
    assert ledger.first_start(message.next_attempt()) is True
    assert AttemptLedger(client, "ledger_test").first_start(TaskMessage(task="t")) is True
