"""Tasks: named functions bound to queues, and the message format.

One module lists an application's tasks::

    from starlingpy.client import Client
    from starlingpy.worker import TaskSet

    tasks = TaskSet("grader", client_factory=lambda: Client(["127.0.0.1:22122"]))

    @tasks.task(queue="pulls", max_attempts=3)
    def grade(submission_id: int) -> None:
        ...

    grade.push(42)       # web tier: enqueue; a worker calls grade(42)
    grade(42)            # still a plain function: runs here and now
    grade.push_in(3600, 42)                  # in an hour (a delayed item)
    grade.push_at(datetime(2027, 1, 1, tzinfo=timezone.utc), 42)

    @tasks.task(retry=Retry(max_attempts=5, intervals=[10, 60, 300]), timeout=30,
                unique=lambda submission_id: str(submission_id))
    def regrade(submission_id: int) -> None:
        ...

``retry``: a failed attempt is pushed again as a delayed item, after the
next interval (the last one repeats), or :meth:`Retry.exponential` with
jitter. ``timeout``: see :mod:`starlingpy.worker.limits`. ``unique``: a key
function over the push's arguments; a push while a message with an equal
key is queued, delayed or running stores nothing and returns the existing
message's id (the id is derived from the key). While a failed attempt waits
for its retry, the retry holds an id of its own (``<id>.a<attempt>``): a
push of an equal message in that window is stored.

Message format (JSON, flags FLAG_JSON), version 1::

    {"v": 1, "id": "<32 hex>", "task": "grade", "args": [42], "kwargs": {},
     "enqueued_at": 1764250000.25, "attempt": 1}

with ``"unique": "<the id on the wire>"`` added for a task with a key function.

``attempt`` counts from 1; a retry is a new message with the same ``id`` and
``attempt + 1``. A reader rejects (to the failure queue) a message whose
``v`` it does not know, so the format can evolve: add fields freely, bump
``v`` only for a change old workers must not misread.

Failure records (pushed to the task set's failure queue) are JSON too::

    {"v": 1, "kind": "failure", "id": "<32 hex>",
     "reason": "undecodable"|"unknown_task"|"failed",
     "error": "...", "traceback": "..."|null, "queue": "<where it came from>",
     "failed_at": <unix time>, "message": {...}|null, "raw": "<base64>"|null}

``message`` is the decoded message (``raw`` is then null); an undecodable
item keeps its bytes in ``raw`` so nothing is lost. ``id`` is the message's
id, or a fresh one for an undecodable item (records written before ids were
given one are read with a digest of their ``raw`` bytes as id), so every
record can be named (``starlingpy failed drop ID``).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from starlingpy.backoff import exponential_delay, jittered

__all__ = ["TaskSet", "Task", "TaskMessage", "BadMessage", "FailureRecord", "MESSAGE_VERSION",
           "Retry"]

MESSAGE_VERSION = 1


class BadMessage(ValueError):
    """An item that is not a task message this code understands."""


def _parsed(data: bytes | str | dict, not_json: str) -> Any:
    """``data`` parsed from JSON text or bytes (a dict is already parsed);
    :class:`BadMessage` starting with ``not_json`` when it is not JSON."""
    if not isinstance(data, (bytes, bytearray, str)):
        return data
    try:
        return json.loads(data)
    except ValueError as exc:  # UnicodeDecodeError is one too
        raise BadMessage(f"{not_json}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class TaskMessage:
    """One task invocation on the wire."""

    task: str
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    enqueued_at: float = dataclasses.field(default_factory=time.time)
    attempt: int = 1
    unique: str | None = None  # the unique id on the wire (a task with a key function)
    scheduled_for: float | None = None  # a periodic job's run time (unix)

    def to_dict(self) -> dict[str, Any]:
        fields = {"v": MESSAGE_VERSION, "id": self.id, "task": self.task, "args": list(self.args),
                  "kwargs": dict(self.kwargs), "enqueued_at": self.enqueued_at,
                  "attempt": self.attempt}
        if self.unique is not None:
            fields["unique"] = self.unique
        if self.scheduled_for is not None:
            fields["scheduled_for"] = self.scheduled_for
        return fields

    def wire_unique(self) -> str | None:
        """The unique id this message is sent with: its own for the first
        attempt, a derived one for retries (the first is still held by the
        attempt that failed, open until it is confirmed)."""
        if self.unique is None or self.attempt == 1:
            return self.unique
        return f"{self.unique}.a{self.attempt}"

    def next_attempt(self) -> TaskMessage:
        return dataclasses.replace(self, attempt=self.attempt + 1, enqueued_at=time.time())

    @classmethod
    def decode(cls, data: bytes | str | dict) -> TaskMessage:
        """Parse a message from the item's bytes (or an already decoded
        dict). Raises :class:`BadMessage` with the reason."""
        data = _parsed(data, "not JSON")
        if not isinstance(data, dict):
            raise BadMessage(f"not a JSON object: {type(data).__name__}")
        if data.get("v") != MESSAGE_VERSION:
            raise BadMessage(f"unknown message version {data.get('v')!r}")
        task, args, kwargs = data.get("task"), data.get("args", []), data.get("kwargs", {})
        msg_id, enqueued_at, attempt = data.get("id"), data.get("enqueued_at"), data.get("attempt", 1)
        if not isinstance(task, str) or not task:
            raise BadMessage("missing task name")
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise BadMessage("args must be a list and kwargs an object")
        if not isinstance(msg_id, str) or not msg_id:
            raise BadMessage("missing message id")
        if not isinstance(enqueued_at, (int, float)) or isinstance(enqueued_at, bool):
            raise BadMessage("missing enqueue time")
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise BadMessage(f"bad attempt number {attempt!r}")
        unique, scheduled_for = data.get("unique"), data.get("scheduled_for")
        if unique is not None and not isinstance(unique, str):
            raise BadMessage("unique must be a string")
        if scheduled_for is not None and (isinstance(scheduled_for, bool)
                                          or not isinstance(scheduled_for, (int, float))):
            raise BadMessage("scheduled_for must be a unix time")
        return cls(task=task, args=tuple(args), kwargs=kwargs, id=msg_id,
                   enqueued_at=float(enqueued_at), attempt=attempt, unique=unique,
                   scheduled_for=scheduled_for)


@dataclasses.dataclass(frozen=True)
class FailureRecord:
    """What the failure queue holds for one message that could not be done."""

    reason: str            # "undecodable" | "unknown_task" | "failed"
    error: str
    queue: str
    message: TaskMessage | None = None
    raw: bytes | None = None
    traceback: str | None = None
    failed_at: float = dataclasses.field(default_factory=time.time)
    record_id: str | None = None  # (None: the message's id, or a fresh one)

    def __post_init__(self) -> None:
        if self.record_id is None:
            fresh = self.message.id if self.message else uuid.uuid4().hex
            object.__setattr__(self, "record_id", fresh)

    def to_dict(self) -> dict[str, Any]:
        return {"v": MESSAGE_VERSION, "kind": "failure", "id": self.id, "reason": self.reason,
                "error": self.error,
                "traceback": self.traceback, "queue": self.queue, "failed_at": self.failed_at,
                "message": self.message.to_dict() if self.message else None,
                "raw": base64.b64encode(self.raw).decode("ascii") if self.raw is not None else None}

    @classmethod
    def decode(cls, data: bytes | str | dict) -> FailureRecord:
        data = _parsed(data, "not a failure record")
        if not isinstance(data, dict) or data.get("kind") != "failure":
            raise BadMessage("not a failure record")
        message = TaskMessage.decode(data["message"]) if data.get("message") else None
        raw = base64.b64decode(data["raw"]) if data.get("raw") else None
        record_id = data.get("id")
        if not isinstance(record_id, str) or not record_id:
            record_id = message.id if message else hashlib.sha256(raw or b"").hexdigest()[:32]
        return cls(reason=str(data.get("reason")), error=str(data.get("error")),
                   queue=str(data.get("queue")), message=message, raw=raw,
                   traceback=data.get("traceback"), failed_at=float(data.get("failed_at", 0)),
                   record_id=record_id)

    @property
    def id(self) -> str:
        return self.record_id


@dataclasses.dataclass(frozen=True)
class Retry:
    """How a failed task is tried again: at most ``max_attempts`` attempts
    in all, attempt ``n + 1`` pushed as a delayed item ``intervals[n - 1]``
    seconds after attempt ``n`` failed (the last interval repeats; none: at
    once). :meth:`exponential` makes doubling intervals with jitter."""

    max_attempts: int = 3
    intervals: Sequence[float] = ()
    initial: float | None = None  # exponential: the first interval ...
    maximum: float = 3600.0       # ... doubling up to this
    jitter: float = 0.0           # up to this part of each interval is taken off at random

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if any(not isinstance(s, (int, float)) or s < 0 for s in self.intervals):
            raise ValueError(f"intervals must be seconds >= 0, got {self.intervals!r}")
        object.__setattr__(self, "intervals", tuple(self.intervals))

    @classmethod
    def exponential(cls, max_attempts: int = 5, initial: float = 10.0, maximum: float = 3600.0,
                    jitter: float = 0.5) -> Retry:
        """Intervals ``initial``, doubling to ``maximum``, each less a random
        part of up to ``jitter`` of it (so a burst of failures spreads out)."""
        return cls(max_attempts=max_attempts, initial=initial, maximum=maximum, jitter=jitter)

    def delay(self, failed_attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the attempt after ``failed_attempt`` (1-based)."""
        if self.initial is not None:
            delay = exponential_delay(failed_attempt, self.initial, self.maximum)
        elif self.intervals:
            delay = self.intervals[min(failed_attempt, len(self.intervals)) - 1]
        else:
            delay = 0.0
        return jittered(delay, self.jitter, rng) if self.jitter else float(delay)


class Task:
    """A function bound to a queue. Calling it runs it here; ``push`` enqueues."""

    def __init__(self, taskset: TaskSet, func: Callable, name: str, queue: str,
                 max_attempts: int, retry: Retry | None = None, timeout: float | None = None,
                 unique: Callable[..., object] | None = None) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be seconds > 0, got {timeout!r}")
        self.taskset = taskset
        self.func = func
        self.name = name
        self.queue = queue
        self.retry = retry if retry is not None else Retry(max_attempts=max_attempts)
        self.max_attempts = self.retry.max_attempts
        self.timeout = timeout
        self.unique = unique
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)

    def message(self, *args, **kwargs) -> TaskMessage:
        """The message ``push`` would send (arguments must be JSON-able)."""
        if self.unique is None:
            msg = TaskMessage(task=self.name, args=args, kwargs=kwargs)
        else:
            # The id follows from the key, so an equal push can say which message it met.
            digest = hashlib.sha256(f"{self.name}\0{self.unique(*args, **kwargs)}".encode()).hexdigest()
            msg = TaskMessage(task=self.name, args=args, kwargs=kwargs, id=digest[:32],
                              unique=f"task:{digest[:40]}")
        json.dumps(msg.to_dict(), allow_nan=False)  # fail here, in the caller, not in a worker
        return msg

    def push(self, *args, **kwargs) -> str:
        """Enqueue a call on this task's queue; returns the message id (for a
        unique task whose equal message is already there, that one's id).
        Raises the client's errors (``ServerUnavailable``, ``NotStored``,
        ``UnsupportedFeature`` for a unique task on a server without unique items)."""
        return self._push(0.0, args, kwargs)

    def push_in(self, seconds: float, *args, **kwargs) -> str:
        """Like :meth:`push`, run no sooner than ``seconds`` from now (a delayed item)."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError(f"seconds must be a number >= 0, got {seconds!r}")
        return self._push(float(seconds), args, kwargs)

    def push_at(self, when: datetime, *args, **kwargs) -> str:
        """Like :meth:`push`, run no sooner than ``when`` (a naive datetime is
        local time; one in the past runs at once)."""
        if not isinstance(when, datetime):
            raise TypeError(f"when must be a datetime, got {when!r}")
        return self._push(max(0.0, when.timestamp() - time.time()), args, kwargs)

    def _push(self, delay: float, args: tuple, kwargs: dict) -> str:
        msg = self.message(*args, **kwargs)
        self.taskset.send(self.queue, msg, delay=delay)
        return msg.id

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue} max_attempts={self.max_attempts}>"


class TaskSet:
    """The tasks of one application.

    ``client_factory`` makes the Client used by ``push`` (and by workers
    that are not given one). It is called lazily, once per process: a forked
    worker never shares its parent's sockets. While a worker runs a task it
    lends the set its own client (:meth:`using`), so pushes made by the task
    go to the worker's server(s) whatever the factory says.
    """

    def __init__(self, name: str, client_factory: Callable[[], Any] | None = None,
                 failure_queue: str = "failed", default_queue: str = "default",
                 default_max_attempts: int = 1) -> None:
        self.name = name
        self.client_factory = client_factory
        self.failure_queue = failure_queue
        self.default_queue = default_queue
        self.default_max_attempts = default_max_attempts
        self.tasks: dict[str, Task] = {}
        self.schedules: list = []  # periodic jobs (starlingpy.worker.schedule.Schedule)
        self._client = None
        self._client_pid: int | None = None
        self._lent: tuple[Any, int] | None = None  # (client, pid) while a worker lends one
        self._lock = threading.Lock()

    def task(self, func: Callable | None = None, *, queue: str | None = None,
             name: str | None = None, max_attempts: int | None = None,
             retry: Retry | None = None, timeout: float | None = None,
             unique: Callable[..., object] | None = None):
        """Decorator: ``@tasks.task`` or ``@tasks.task(queue="pulls", max_attempts=3)``
        (or ``retry=Retry(...)`` instead of ``max_attempts``; ``timeout``
        seconds; ``unique`` a key function). See the module docstring."""
        if retry is not None and max_attempts is not None:
            raise ValueError("give max_attempts or retry=Retry(max_attempts=...), not both")

        def register(f: Callable) -> Task:
            task_name = name or f.__name__
            if task_name in self.tasks:
                raise ValueError(f"task {task_name!r} is already defined in {self.name!r}")
            task = Task(self, f, task_name, queue or self.default_queue,
                        max_attempts or self.default_max_attempts, retry, timeout, unique)
            self.tasks[task_name] = task
            return task
        return register(func) if func is not None else register

    def get(self, name: str) -> Task | None:
        return self.tasks.get(name)

    def every(self, interval: timedelta | float, task: Task, *args, **kwargs):
        """Run ``task(*args, **kwargs)`` every ``interval`` (a timedelta or
        seconds), at the multiples of it since the epoch (UTC), so every
        process agrees on the run times. See :mod:`starlingpy.worker.schedule`."""
        from starlingpy.worker.schedule import Schedule

        return self._add_schedule(Schedule.every(interval, task, args, kwargs))

    def cron(self, expression: str, task: Task, *args, **kwargs):
        """Run ``task(*args, **kwargs)`` at the times of a cron expression
        (``"0 3 * * *"``: 03:00 UTC daily). See :mod:`starlingpy.worker.schedule`."""
        from starlingpy.worker.schedule import Schedule

        return self._add_schedule(Schedule.cron(expression, task, args, kwargs))

    def _add_schedule(self, schedule):
        if schedule.task.taskset is not self:
            raise ValueError(f"task {schedule.task.name!r} is not one of {self.name!r}'s")
        if any(s.key == schedule.key for s in self.schedules):
            raise ValueError(f"periodic job {schedule.key!r} is already scheduled")
        self.schedules.append(schedule)
        return schedule

    @property
    def queues(self) -> list[str]:
        """Every queue a task of this set is bound to, in definition order."""
        return list(dict.fromkeys(task.queue for task in self.tasks.values()))

    @property
    def client(self):
        """This process's client: the one a running worker lent (:meth:`using`),
        else the one ``client_factory`` made on first use."""
        with self._lock:
            if self._lent is not None and self._lent[1] == os.getpid():
                return self._lent[0]
            if self._client is None or self._client_pid != os.getpid():
                if self.client_factory is None:
                    raise RuntimeError(f"TaskSet {self.name!r} has no client_factory")
                self._client = self.client_factory()
                self._client_pid = os.getpid()
            return self._client

    @contextlib.contextmanager
    def using(self, client) -> Iterator[None]:
        """Make ``client`` this process's client for the block (on every
        thread; a forked child does not inherit it). Blocks nest."""
        with self._lock:
            previous, self._lent = self._lent, (client, os.getpid())
        try:
            yield
        finally:
            with self._lock:
                self._lent = previous

    def send(self, queue: str, message: TaskMessage, client=None, delay: float = 0.0) -> bool:
        """Enqueue ``message`` (after ``delay`` seconds); False when it is a
        unique message whose id is in use (nothing was stored)."""
        options: dict[str, Any] = {}
        if delay:
            options["delay"] = delay
        if (unique := message.wire_unique()) is not None:
            options["unique"] = unique
        return (client or self.client).set(queue, message.to_dict(), **options) is not False

    def send_failure(self, record: FailureRecord, client=None) -> None:
        (client or self.client).set(self.failure_queue, record.to_dict())
