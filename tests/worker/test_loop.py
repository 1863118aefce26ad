"""The worker loop in-process against a real server: priority, retries, the
failure queue, stopping, database verification, and the polling fallback."""

from __future__ import annotations

import json
import threading

import pytest
import sqlalchemy

from starlingpy.client import Client
from starlingpy.worker import ColdStop, TaskSet, Worker, db
from starlingpy.worker.tasks import FailureRecord
from tests.support import wait_until
from tests.worker import dbkit


def make_tasks(client) -> tuple[TaskSet, list]:
    """A task set with a `record` task on each queue; `seen` gets (queue, n)."""
    tasks = TaskSet("test", client_factory=lambda: client)
    seen = []

    @tasks.task(queue="pulls")
    def pull(n):
        seen.append(("pulls", n))

    @tasks.task(queue="pushes")
    def push(n):
        seen.append(("pushes", n))

    return tasks, seen


def drain_failures(client, queue="failed") -> list[FailureRecord]:
    records = []
    while (msg := client.get_first([queue])) is not None:
        records.append(FailureRecord.decode(msg.raw))
    return records


def test_burst_handles_everything_in_strict_priority(client):
    tasks, seen = make_tasks(client)
    for n in range(5):  # the low-priority items were enqueued first
        tasks.get("push").push(n)
    for n in range(5):
        tasks.get("pull").push(n)
    worker = Worker(tasks, queues=["pulls", "pushes"], client=client)
    assert worker.work(burst=True) == 10
    assert seen == [("pulls", n) for n in range(5)] + [("pushes", n) for n in range(5)]
    assert client.sizeof("pulls") == 0 and client.sizeof("pushes") == 0
    assert worker.statistics().succeeded == 10


@pytest.fixture(params=["starlingpy", "plain-memcache"])
def any_client(request):
    """A client on the real server, or on the plain-memcache stub (polling fallback)."""
    return request.getfixturevalue("client" if request.param == "starlingpy" else "plain_client")


def test_a_pushes_item_waits_while_pulls_keeps_getting_work(any_client):
    client = any_client
    tasks = TaskSet("feed", client_factory=lambda: client)
    order = []

    @tasks.task(queue="pulls")
    def pull(n):
        order.append(f"pull{n}")
        if n < 8:  # a producer feeding both queues while the worker runs
            pull.push(n + 1)
            push.push(n)

    @tasks.task(queue="pushes")
    def push(n):
        order.append(f"push{n}")

    push.push(-1)
    pull.push(0)
    assert Worker(tasks, client=client).work(burst=True) == 18
    assert order == [f"pull{n}" for n in range(9)] + [f"push{n}" for n in range(-1, 8)]


def test_max_messages_and_waiting_for_work(client):
    tasks, seen = make_tasks(client)
    worker = Worker(tasks, queues=["pulls", "pushes"], client=client, wait_timeout=2)
    result = []
    thread = threading.Thread(target=lambda: result.append(worker.work(max_messages=2)))
    thread.start()
    tasks.get("push").push(1)
    tasks.get("pull").push(2)
    thread.join(30)
    assert not thread.is_alive() and result == [2]
    assert sorted(seen) == [("pulls", 2), ("pushes", 1)]


def test_a_failing_task_is_retried_then_succeeds(client):
    tasks = TaskSet("retry", client_factory=lambda: client)
    attempts = []

    @tasks.task(queue="jobs", max_attempts=3)
    def flaky(x):
        attempts.append(x)
        if len(attempts) < 3:
            raise RuntimeError("transient")

    msg_id = flaky.push("a")
    worker = Worker(tasks, client=client)
    assert worker.work(burst=True) == 3
    assert attempts == ["a", "a", "a"]
    stats = worker.statistics()
    assert (stats.retried, stats.succeeded, stats.failed) == (2, 1, 0)
    assert drain_failures(client) == []
    assert msg_id


def test_after_the_last_attempt_the_message_goes_to_the_failure_queue(client):
    tasks = TaskSet("fail", client_factory=lambda: client, failure_queue="dead")

    @tasks.task(queue="jobs", max_attempts=2)
    def broken(x):
        raise ValueError(f"cannot do {x}")

    msg_id = broken.push(7)
    worker = Worker(tasks, client=client)
    assert worker.work(burst=True) == 2
    [record] = drain_failures(client, "dead")
    assert record.reason == "failed" and record.queue == "jobs"
    assert record.message.id == msg_id and record.message.attempt == 2 and record.message.args == (7,)
    assert "ValueError: cannot do 7" in record.traceback
    assert client.sizeof("jobs") == 0


def test_undecodable_and_unknown_messages_go_to_the_failure_queue(client):
    tasks, seen = make_tasks(client)
    client.set("pulls", b"\x00 not json")
    client.set("pulls", {"v": 1, "id": "abc", "task": "nope", "args": [], "kwargs": {},
                         "enqueued_at": 1.0, "attempt": 1})
    client.set("pulls", {"v": 99})
    worker = Worker(tasks, queues=["pulls"], client=client)
    assert worker.work(burst=True) == 3
    records = drain_failures(client)
    assert [r.reason for r in records] == ["undecodable", "unknown_task", "undecodable"]
    assert records[0].raw == b"\x00 not json"
    assert records[1].message.task == "nope" and "unknown task" in records[1].error
    assert json.loads(records[2].raw) == {"v": 99}
    assert worker.statistics().rejected == 3 and seen == []


def test_warm_stop_finishes_the_current_message_then_returns(client):
    tasks = TaskSet("warm", client_factory=lambda: client)
    done = []

    @tasks.task(queue="jobs")
    def job(n):
        worker.request_stop()  # as the first SIGTERM would, mid-task
        done.append(n)

    for n in range(3):
        job.push(n)
    worker = Worker(tasks, client=client)
    assert worker.work() == 1
    assert done == [0] and worker.stop_requested == "warm"
    assert client.sizeof("jobs") == 2


def test_cold_stop_aborts_the_message_back_to_the_queue(client):
    tasks = TaskSet("cold", client_factory=lambda: client)
    started = []

    @tasks.task(queue="jobs")
    def job(n):
        started.append(n)
        try:
            worker.request_stop(cold=True)
        except Exception:  # a task cannot swallow the stop
            pytest.fail("ColdStop must not be an Exception")

    job.push(1)
    worker = Worker(tasks, client=client)
    assert worker.work() == 0
    assert started == [1] and worker.stop_requested == "cold"
    assert issubclass(ColdStop, BaseException) and not issubclass(ColdStop, Exception)
    msg = client.get_first(["jobs"])
    assert msg is not None and msg.value["args"] == [1] and msg.value["attempt"] == 1


def test_polling_fallback_keeps_strict_priority(plain_client):
    tasks, seen = make_tasks(plain_client)
    for n in range(3):
        tasks.get("push").push(n)
    for n in range(3):
        tasks.get("pull").push(n)
    worker = Worker(tasks, queues=["pulls", "pushes"], client=plain_client)
    assert worker.work(burst=True) == 6
    assert worker.reliable is False  # the stub has no /open: fell back, loudly
    assert seen == [("pulls", n) for n in range(3)] + [("pushes", n) for n in range(3)]


def test_polling_fallback_waits_for_work(plain_server, plain_client):
    tasks, seen = make_tasks(plain_client)
    worker = Worker(tasks, queues=["pulls", "pushes"], client=plain_client, wait_timeout=2)
    result = []
    thread = threading.Thread(target=lambda: result.append(worker.work(max_messages=1)))
    thread.start()
    wait_until(lambda: plain_server.get_count >= 4, message="the worker to poll")
    tasks.get("push").push(5)
    thread.join(30)
    assert result == [1] and seen == [("pushes", 5)]


# -- database verification through the worker ---------------------------------

@pytest.mark.db
@pytest.mark.parametrize("backend", dbkit.BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("verified", [True, False], ids=["verified", "unverified"])
def test_connections_killed_while_the_worker_waits(client, backend, verified):
    admin = backend.admin()
    table = dbkit.unique_table(admin)
    engine = (db.create_engine(backend.url, pool_size=3) if verified
              else sqlalchemy.create_engine(backend.url, pool_size=3))
    try:
        tasks = TaskSet("dbwork", client_factory=lambda: client)
        attempts = []

        @tasks.task(queue="rows", max_attempts=3)
        def write_row(n):
            attempts.append(n)
            session = db.session(engine) if verified else sqlalchemy.orm.Session(engine)
            try:
                dbkit.insert_row(lambda: session, table, n)
            finally:
                if not verified:
                    session.close()

        worker = Worker(tasks, client=client, engines=[engine] if verified else [], wait_timeout=2)
        write_row.push(0)  # warm up: the pool now holds an idle connection
        result = []
        thread = threading.Thread(target=lambda: result.append(worker.work(max_messages=6)))
        thread.start()
        wait_until(lambda: attempts == [0], message="the warm-up message")
        wait_until(lambda: worker.statistics().handled == 1 and engine.pool.checkedin() >= 1,
                   message="the worker to go idle")
        sids = dbkit.fill_pool(engine, backend, 1)  # the idle pooled connection
        dbkit.kill_sessions(admin, backend, sids)   # ...killed while the worker waits
        for n in range(1, 6):
            write_row.push(n)
        thread.join(60)
        assert result == [6]
        leftover = worker.work(burst=True)  # only the unverified run has retries left
        assert leftover == (0 if verified else worker.statistics().retried)
        assert dbkit.rows(admin, table) == [0, 1, 2, 3, 4, 5], "every row exactly once"
        if verified:
            assert attempts == [0, 1, 2, 3, 4, 5], "every task succeeded on its first attempt"
            assert worker.statistics().retried == 0
        else:
            assert worker.statistics().retried >= 1, "without verification a task saw the dead connection"
    finally:
        engine.dispose()
        dbkit.drop_table(admin, table)
        admin.dispose()


def test_a_running_task_pushes_through_the_workers_client(client):
    unreachable = Client(["127.0.0.1:1"], connect_timeout=0.5, set_retries=0)
    tasks = TaskSet("lend", client_factory=lambda: unreachable)
    seen = []

    @tasks.task(queue="first")
    def first(n):
        second.push(n + 1)  # no client given: the task set's

    @tasks.task(queue="second")
    def second(n):
        seen.append(n)

    client.set("first", first.message(1).to_dict())
    worker = Worker(tasks, client=client)
    assert worker.work(burst=True) == 2
    assert seen == [2] and worker.statistics().succeeded == 2
    assert tasks.client is unreachable, "lent only while the task ran"
    unreachable.close()


def test_bad_queue_names_fail_at_construction(client):
    from starlingpy.client import InvalidQueueName
    tasks, _ = make_tasks(client)
    with pytest.raises(InvalidQueueName):
        Worker(tasks, queues=["pulls", "a|b"], client=client)
    with pytest.raises(ValueError):
        Worker(TaskSet("empty"), client=client)
