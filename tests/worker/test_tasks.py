"""The task message format and the task set, without I/O."""

from __future__ import annotations

import json

import pytest

from starlingpy.worker.tasks import BadMessage, FailureRecord, TaskMessage, TaskSet


@pytest.fixture
def make_set(plain_client):
    """A task set pushing to a real (plain memcache) server, and a way to
    read back what arrived on a queue."""
    def sent(queue):
        items = []
        while (msg := plain_client.get_first([queue])) is not None:
            items.append(json.loads(msg.raw))
        return items

    return lambda: (TaskSet("app", client_factory=lambda: plain_client), sent)


def test_push_sends_a_self_describing_json_message(make_set):
    tasks, sent = make_set()

    @tasks.task(queue="pulls", max_attempts=3)
    def grade(submission, strict=False):
        return (submission, strict)

    msg_id = grade.push(42, strict=True)
    [value] = sent("pulls")
    assert value["v"] == 1 and value["id"] == msg_id and value["task"] == "grade"
    assert value["args"] == [42] and value["kwargs"] == {"strict": True} and value["attempt"] == 1
    assert isinstance(value["enqueued_at"], float)
    assert TaskMessage.decode(json.dumps(value).encode()).to_dict() == value
    assert grade(1) == (1, False), "a task is still a plain function"


def test_task_defaults_and_queue_order():
    tasks = TaskSet("app")

    @tasks.task
    def a():
        pass

    @tasks.task(queue="pulls")
    def b():
        pass

    @tasks.task(queue="default", name="c-named")
    def c():
        pass

    assert a.queue == "default" and a.max_attempts == 1
    assert tasks.queues == ["default", "pulls"]
    assert tasks.get("c-named") is c and tasks.get("c") is None
    with pytest.raises(ValueError):
        tasks.task(name="a")(lambda: None)


def test_arguments_that_are_not_json_fail_at_push_time(make_set):
    tasks, sent = make_set()

    @tasks.task
    def t(x):
        pass

    with pytest.raises(TypeError):
        t.push(object())
    with pytest.raises(ValueError):
        t.push(float("nan"))
    assert sent("default") == []


def test_next_attempt_keeps_the_id():
    msg = TaskMessage(task="t", args=(1,))
    again = msg.next_attempt()
    assert again.id == msg.id and again.attempt == 2 and again.args == (1,)


@pytest.mark.parametrize("raw, reason", [
    (b"\xff\xfe", "not JSON"),
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"v": 2, "task": "t", "id": "x", "enqueued_at": 1}', "unknown message version"),
    (b'{"v": 1, "id": "x", "enqueued_at": 1}', "missing task name"),
    (b'{"v": 1, "task": "t", "args": {}, "id": "x", "enqueued_at": 1}', "args must be a list"),
    (b'{"v": 1, "task": "t", "enqueued_at": 1}', "missing message id"),
    (b'{"v": 1, "task": "t", "id": "x"}', "missing enqueue time"),
    (b'{"v": 1, "task": "t", "id": "x", "enqueued_at": 1, "attempt": 0}', "bad attempt"),
])
def test_bad_messages_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(BadMessage, match=reason):
        TaskMessage.decode(raw)


def test_failure_record_round_trip_keeps_raw_bytes_and_message():
    raw = bytes(range(256))
    record = FailureRecord(reason="undecodable", error="not JSON", queue="pulls", raw=raw)
    back = FailureRecord.decode(json.dumps(record.to_dict()))
    assert back.raw == raw and back.message is None and back.queue == "pulls"
    msg = TaskMessage(task="t", args=(1, "x"), kwargs={"k": [1]})
    record = FailureRecord(reason="failed", error="boom", queue="q", message=msg, traceback="tb")
    back = FailureRecord.decode(json.dumps(record.to_dict()).encode())
    assert back.message == msg and back.traceback == "tb" and back.id == msg.id
    with pytest.raises(BadMessage):
        FailureRecord.decode(json.dumps(msg.to_dict()))
