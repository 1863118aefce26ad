"""The worker loop: take a message in strict queue priority, run its task,
confirm it. Readable top to bottom: :meth:`Worker.work` is the loop,
:meth:`Worker.handle` is one message.

Delivery is at-least-once. A message is taken with a reliable read
(``get pulls|pushes/.../open`` through the client) and confirmed only after
its task finished, was re-queued for another attempt, or was moved to the
failure queue. If the process dies in between, the server gives the message
to another worker. Against a server without reliable reads (a plain memcache
or Ruby Starling server) the loop falls back to plain gets, polling in
priority order with back-off: delivery is then at-most-once, and the worker
says so loudly in its log.

Stopping (rq's rules): the first SIGTERM/SIGINT is a *warm* stop: the
current message is finished, then ``work`` returns; if the worker is idle it
returns at once. The second is a *cold* stop: :class:`ColdStop` is raised
wherever the worker is, the open read is aborted (the message goes back to
the head of its queue) and ``work`` returns. Both derive from
``BaseException`` so a task's ``except Exception`` cannot swallow them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence

from starlingpy.backoff import Backoff
from starlingpy.client import ClientError, ConfirmFailed, Message, UnsupportedFeature
from starlingpy.client.keys import check_queue_name
from starlingpy.process.reaper import PeriodicReaper, become_subreaper, kill_adopted
from starlingpy.worker.db import Databases
from starlingpy.worker.limits import AttemptLedger, TaskTimeout, time_limit
from starlingpy.worker.tasks import BadMessage, FailureRecord, TaskMessage, TaskSet

__all__ = ["Worker", "WorkerStatistics", "StopRequested", "WarmStop", "ColdStop"]

log = logging.getLogger("starlingpy.worker")

# Back-off while the queue server (or a database) is unreachable: short, so a
# worker is back soon after a server restart (see cli/work.py's dead_retry).
_RETRY_FIRST, _RETRY_MAX = 0.25, 2.0


class StopRequested(BaseException):
    """Base of the stop signals; not an Exception, so tasks cannot catch it
    with ``except Exception``."""


class WarmStop(StopRequested):
    """Raised only while idle: nothing to finish, stop now."""


class ColdStop(StopRequested):
    """Second signal: abort the current message and stop now."""


@dataclasses.dataclass(frozen=True)
class WorkerStatistics:
    handled: int       # messages taken and dealt with (any outcome below)
    succeeded: int
    retried: int       # re-queued for another attempt
    failed: int        # moved to the failure queue after the last attempt
    rejected: int      # undecodable or unknown task: moved to the failure queue


class _DatabaseUnavailable(Exception):
    """Verification could not reach a database: put the message back."""


class Worker:
    """Runs the tasks of ``taskset`` from ``queues`` (priority order; default:
    the task set's queues in definition order).

    ``client``: the queue client (default ``taskset.client``). ``engines``:
    SQLAlchemy engines verified before each message (see
    :mod:`starlingpy.worker.db`). ``wait_timeout``: seconds one blocking get
    waits before the loop checks its stop flag again. ``reliable``: True
    requires reliable reads, False never uses them, None (default) uses them
    where the server has them. ``between_messages``: called before each
    take, while no task runs. ``adopt_orphans``: make this process the
    subreaper of what tasks start (Linux), reap those orphans between
    messages and kill the ones still running when :meth:`work` returns.
    ``on_finish(task name or None, outcome, seconds)``: told after each
    message (worker metrics). ``schedule``: when the task set has periodic
    jobs, compete to be their one scheduler (a thread; see
    :mod:`starlingpy.worker.schedule`) while :meth:`work` runs.

    While a task runs, ``client`` is the task set's client in this process
    (:meth:`TaskSet.using`): a task that pushes another task reaches the
    server(s) this worker works for.
    """

    def __init__(self, taskset: TaskSet, queues: Sequence[str] | None = None, client=None,
                 engines: Iterable = (), *, wait_timeout: float = 5.0,
                 reliable: bool | None = None, name: str | None = None,
                 between_messages: Callable[[], object] | None = None,
                 adopt_orphans: bool = False,
                 on_finish: Callable[[str | None, str, float], object] | None = None,
                 schedule: bool = True) -> None:
        self.taskset = taskset
        self.queues = list(queues) if queues else taskset.queues
        if not self.queues:
            raise ValueError("a worker needs at least one queue")
        # (and the task set's own: its attempt ledger, its scheduler's lock)
        for queue in [*self.queues, taskset.failure_queue, f"{taskset.name}_attempts"]:
            check_queue_name(queue)  # a bad name fails here, not in an endless retry loop
        self.client = client if client is not None else taskset.client
        self.databases = Databases(engines)
        self.wait_timeout = wait_timeout
        self.reliable = reliable
        self.name = name or taskset.name
        self.between_messages = between_messages
        self.adopt_orphans = adopt_orphans
        self.on_finish = on_finish
        self.schedule = schedule
        self.attempts = AttemptLedger(self.client, f"{taskset.name}_attempts")
        self.stop_requested: str | None = None   # None, "warm" or "cold"
        self._busy = False
        self._counts = dict(handled=0, succeeded=0, retried=0, failed=0, rejected=0)

    # -- the loop ---------------------------------------------------------

    def work(self, burst: bool = False, max_messages: int | None = None) -> int:
        """Handle messages until stopped; returns how many were handled.

        ``burst``: return as soon as every queue is empty. ``max_messages``:
        return after that many. Raises the client's errors only in burst mode
        (otherwise it backs off and retries while the server is down).
        """
        handled = 0
        backoff = Backoff(_RETRY_FIRST, _RETRY_MAX)
        # Orphans of the programs tasks run (a killed process group's
        # grandchildren) come to us; reaped between messages, when no task
        # is waiting for a child of its own.
        reap = PeriodicReaper() if self.adopt_orphans and become_subreaper() else None
        log.info("worker %s starting on queues %s", self.name, ",".join(self.queues))
        stop_scheduling = self._start_scheduler()
        try:
            while self.stop_requested is None:
                if max_messages is not None and handled >= max_messages:
                    break
                if reap is not None:
                    reap()
                if self.between_messages is not None:
                    self.between_messages()
                try:
                    got_one = self._take_and_handle(timeout=0 if burst else self.wait_timeout)
                except (ClientError, _DatabaseUnavailable) as exc:
                    if burst:
                        raise
                    delay = backoff.next_delay()
                    log.warning("worker %s: %s; retrying in %.2fs", self.name, exc, delay)
                    time.sleep(delay)
                    continue
                backoff.reset()
                if got_one:
                    handled += 1
                elif burst:
                    break
        except StopRequested as stop:
            log.info("worker %s: %s", self.name, "cold stop: message aborted" if isinstance(stop, ColdStop)
                     else "stopped while idle")
        finally:
            # Clean-up for every caller, not only the CLI, and whatever ended
            # the loop (rq's lesson); an open read was aborted by _take.
            stop_scheduling()
            if reap is not None and (strays := kill_adopted()):
                log.info("worker %s: killed %d orphaned process(es)", self.name, strays)
            log.info("worker %s stopping after %d message(s)", self.name, handled)
        return handled

    def _start_scheduler(self) -> Callable[[], None]:
        """The periodic-job scheduler thread, when there is work for one;
        returns what stops it."""
        if not (self.schedule and self.taskset.schedules):
            return lambda: None
        from starlingpy.worker.schedule import Scheduler

        stop = threading.Event()
        thread = threading.Thread(target=Scheduler(self.taskset, self.client, stop,
                                                   name=self.name).run,
                                  name="starlingpy-scheduler", daemon=True)
        thread.start()

        def stop_scheduler() -> None:
            stop.set()
            thread.join(10)

        return stop_scheduler

    def _take_and_handle(self, timeout: float) -> bool:
        try:
            with self._take(timeout) as message:
                if message is None:
                    return False
                # Busy until the confirmation is sent too: a warm stop must
                # not interrupt it (the message would come back, done twice).
                self._busy = True
                self.handle(message)
        finally:
            self._busy = False
        return True

    @contextlib.contextmanager
    def _take(self, timeout: float) -> Iterator[Message | None]:
        """A message from the first non-empty queue, held open until the
        block ends (confirmed) or raises (aborted)."""
        if self.reliable is not False:
            reading = self.client.reliable(self.queues, timeout=timeout)
            try:
                message = reading.__enter__()
            except UnsupportedFeature as exc:
                if self.reliable:
                    raise
                log.warning("worker %s: server has no reliable reads (%s); falling back to plain "
                            "gets: a worker that dies mid-task LOSES its message", self.name, exc)
                self.reliable = False
            else:
                try:
                    yield message
                except BaseException:
                    if not reading.__exit__(*sys.exc_info()):  # aborts the message
                        raise
                    return
                try:
                    reading.__exit__(None, None, None)  # confirms the message
                except ConfirmFailed as exc:
                    log.warning("worker %s: %s", self.name, exc)  # it will be delivered again
                return
        yield self.client.get_first(self.queues, timeout=timeout)

    # -- one message ------------------------------------------------------

    def handle(self, message: Message) -> str:
        """Run one message's task and dispose of the message: done, re-queued
        for another attempt, or moved to the failure queue. Returns the
        outcome. Raises only what must abort the message (stop signals, an
        unreachable queue server or database)."""
        started = time.monotonic()
        task_msg = task = None
        try:
            task_msg = TaskMessage.decode(message.raw)
            task = self.taskset.get(task_msg.task)
            if task is None:
                raise BadMessage(f"unknown task {task_msg.task!r}")
        except BadMessage as exc:
            reason = "unknown_task" if task_msg is not None else "undecodable"
            self._send_failure(FailureRecord(reason=reason, error=str(exc), queue=message.queue,
                                             message=task_msg,
                                             raw=None if task_msg is not None else message.raw))
            return self._finish("rejected", message, task_msg, started, str(exc))

        try:
            self.databases.verify()
        except Exception as exc:
            raise _DatabaseUnavailable(f"database verification failed: {exc}") from exc
        if (task.timeout is not None and self.reliable is not False
                and not self.attempts.first_start(task_msg)):
            # Given back by the server: the worker running this attempt died
            # in it (killed in C code past its timeout, most likely).
            died = TaskTimeout(f"attempt {task_msg.attempt} started before and its worker died in "
                               f"it (past its timeout of {task.timeout}s?)")
            return self._attempt_failed(message, task_msg, task, started, died, None)
        try:
            with (self.databases.message_scope(verify_first=False), self.taskset.using(self.client),
                  time_limit(task.timeout)):
                task.func(*task_msg.args, **task_msg.kwargs)
        except (Exception, TaskTimeout) as exc:
            return self._attempt_failed(message, task_msg, task, started, exc,
                                        traceback.format_exc())
        return self._finish("succeeded", message, task_msg, started)

    def _attempt_failed(self, message: Message, task_msg: TaskMessage, task, started: float,
                        error: BaseException, trace: str | None) -> str:
        """Retry after the task's interval, or, after the last attempt, the failure queue."""
        if task_msg.attempt < task.max_attempts:
            self._send_retry(message.queue, task_msg, task.retry.delay(task_msg.attempt))
            return self._finish("retried", message, task_msg, started, repr(error))
        self._send_failure(FailureRecord(reason="failed", error=repr(error), queue=message.queue,
                                         message=task_msg, traceback=trace))
        return self._finish("failed", message, task_msg, started, repr(error))

    def _send_retry(self, queue: str, failed: TaskMessage, delay: float) -> None:
        """Push the next attempt as an item delayed by ``delay`` seconds
        (at once on a server without delayed items, with a warning)."""
        retry = failed.next_attempt()
        try:
            self.taskset.send(queue, retry, client=self.client, delay=delay)
        except UnsupportedFeature as exc:
            log.warning("worker %s: %s; retrying %s at once", self.name, exc, retry.id)
            self.taskset.send(queue, dataclasses.replace(retry, unique=None), client=self.client)

    def _send_failure(self, record: FailureRecord) -> None:
        self.taskset.send_failure(record, client=self.client)

    def _finish(self, outcome: str, message: Message, task_msg: TaskMessage | None,
                started: float, detail: str = "") -> str:
        self._counts["handled"] += 1
        self._counts[outcome] += 1
        elapsed = time.monotonic() - started
        if self.on_finish is not None:
            self.on_finish(task_msg.task if task_msg else None, outcome, elapsed)
        level = logging.INFO if outcome == "succeeded" else logging.WARNING
        log.log(level, "task=%s id=%s queue=%s attempt=%s outcome=%s time=%.3fs%s",
                task_msg.task if task_msg else "?", task_msg.id if task_msg else "?",
                message.queue, task_msg.attempt if task_msg else "?", outcome, elapsed,
                f" error={detail}" if detail else "")
        return outcome

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(**self._counts)

    # -- stopping ---------------------------------------------------------

    def request_stop(self, cold: bool = False) -> None:
        """Ask the loop to stop: warm (finish the current message) or cold.
        Safe from a signal handler; raises a StopRequested when the loop must
        be interrupted where it is (idle, or cold)."""
        if cold or self.stop_requested is not None:
            self.stop_requested = "cold"
            raise ColdStop()
        self.stop_requested = "warm"
        if not self._busy:
            raise WarmStop()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT: first warm, second cold (main thread only)."""
        def on_signal(signum, frame):
            log.info("worker %s: got %s (%s stop)", self.name, signal.Signals(signum).name,
                     "warm" if self.stop_requested is None else "cold")
            self.request_stop()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
