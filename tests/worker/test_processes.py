"""`starlingpy work` and `starlingpy failed` as real subprocesses: delivery
across SIGKILL, warm and cold stops, N instances, the failure-queue CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support import REPO, wait_until

MODULE = "tests.worker.sample_tasks"


class WorkerProcess:
    """`python -m starlingpy work ...` with its stderr drained into `log`."""

    def __init__(self, server, marks: Path, *args: str) -> None:
        cmd = [sys.executable, "-m", "starlingpy", "work", MODULE, "--server", server.address,
               "--wait-timeout", "1", *args]
        env = dict(os.environ, SAMPLE_MARKS=str(marks), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.log = bytearray()
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            self.log += line

    def wait(self, timeout: float = 30) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._drain.join(5)
        return code

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)


def marks_matching(marks: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in marks.iterdir() if p.name.startswith(prefix))


def pid_of(mark: str) -> int:
    return int(mark.rsplit("-", 1)[1])


def test_sigkill_mid_task_the_message_is_handled_again_by_a_new_worker(server, client, marks, tasks):
    tasks.get("hold").push("a")
    first = WorkerProcess(server, marks, "--instances", "1")
    wait_until(lambda: marks_matching(marks, "started-a"), timeout=30, message="task start")
    first.proc.kill()  # SIGKILL: no cleanup of any kind
    assert first.wait() == -signal.SIGKILL
    wait_until(lambda: client.sizeof("slow") == 1, message="the message back in its queue")
    (marks / "release-a").touch()
    second = WorkerProcess(server, marks, "--instances", "1", "--burst")
    assert second.wait() == 0, second.log.decode()
    [done] = marks_matching(marks, "done-a")
    assert pid_of(done) == second.proc.pid
    assert client.sizeof("slow") == 0, "handled and confirmed: nothing lost, nothing left"


def test_sigterm_mid_task_lets_the_task_finish_then_exits_0(server, client, marks, tasks):
    tasks.get("hold").push("b")
    tasks.get("hold").push("later")
    worker = WorkerProcess(server, marks, "--instances", "1")
    wait_until(lambda: marks_matching(marks, "started-b"), timeout=30, message="task start")
    worker.signal(signal.SIGTERM)
    wait_until(lambda: b"warm stop" in worker.log, message="the worker to log the warm stop")
    assert worker.proc.poll() is None, "still finishing its task"
    (marks / "release-b").touch()
    assert worker.wait() == 0, worker.log.decode()
    assert marks_matching(marks, "done-b")
    assert not marks_matching(marks, "started-later"), "no new message after a warm stop"
    assert client.sizeof("slow") == 1
    assert b"task=hold" in worker.log and b"outcome=succeeded" in worker.log


def test_second_sigterm_aborts_the_message_and_exits_at_once(server, client, marks, tasks):
    tasks.get("hold").push("c")
    worker = WorkerProcess(server, marks, "--instances", "1")
    wait_until(lambda: marks_matching(marks, "started-c"), timeout=30, message="task start")
    worker.signal(signal.SIGTERM)
    wait_until(lambda: b"warm stop" in worker.log, message="the first signal to be seen")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 1, worker.log.decode()
    assert not marks_matching(marks, "done-c")
    wait_until(lambda: client.sizeof("slow") == 1, message="the aborted message back in its queue")
    msg = client.get_first(["slow"])
    assert msg.value["args"] == ["c"] and msg.value["attempt"] == 1


def test_sigterm_while_idle_exits_at_once(server, marks, tasks):
    worker = WorkerProcess(server, marks, "--instances", "1", "--wait-timeout", "30")
    wait_until(lambda: b"starting on queues" in worker.log, message="the worker to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0, worker.log.decode()


def test_instances_run_in_parallel_and_stop_together(server, client, marks, tasks):
    for tag in ("p1", "p2"):
        tasks.get("hold").push(tag)
    tasks.get("note").push("n1")
    pool = WorkerProcess(server, marks, "--instances", "2", "--queues", "slow,fast")
    wait_until(lambda: len(marks_matching(marks, "started-p")) == 2, timeout=30,
               message="both tasks running at once")
    pids = {pid_of(m) for m in marks_matching(marks, "started-p")}
    assert len(pids) == 2 and pool.proc.pid not in pids
    pool.signal(signal.SIGTERM)
    wait_until(lambda: pool.log.count(b"(warm stop)") == 2, message="both workers to get the stop")
    for tag in ("p1", "p2"):
        (marks / f"release-{tag}").touch()
    assert pool.wait() == 0, pool.log.decode()
    assert len(marks_matching(marks, "done-p")) == 2
    assert client.sizeof("slow") == 0 and client.sizeof("fast") == 1


def test_failed_cli_lists_retries_and_drops(server, client, marks, tasks):
    first = tasks.get("explode").push("x")
    second = tasks.get("explode").push("y")
    worker = WorkerProcess(server, marks, "--instances", "1", "--burst")
    assert worker.wait() == 0
    assert worker.log.count(b"outcome=failed") == 2 and worker.log.count(b"outcome=retried") == 2

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "starlingpy", "failed", *args,
                               "--server", server.address], cwd=REPO, capture_output=True,
                              timeout=30)

    listing = cli("list", "--traceback")
    assert listing.returncode == 0, listing.stderr
    out = listing.stdout.decode()
    assert first in out and second in out and "RuntimeError: explode x" in out
    assert out.index(first) < out.index(second), "listing keeps the queue's order"
    assert client.sizeof("failed") == 2, "listing removes nothing"

    retried = cli("retry", first)
    assert retried.returncode == 0 and retried.stdout.decode().strip() == f"retry {first}"
    msg = client.get_first(["fast"])
    assert msg.value["id"] == first and msg.value["attempt"] == 1 and msg.value["args"] == ["x"]

    assert cli("drop", "nonexistent").returncode == 1
    assert cli("drop", "--all").returncode == 0
    assert client.sizeof("failed") == 0


def test_pool_restarts_a_crashed_worker_and_numbers_its_workers(server, client, marks, tasks):
    pool = WorkerProcess(server, marks, "--instances", "2", "--queues", "fast")
    started = re.compile(rb"worker (\d): started, pid (\d+)")
    wait_until(lambda: len(started.findall(pool.log)) == 2 and pool.log.count(b"starting on queues") == 2,
               timeout=30, message="two workers up")
    victim = int(started.findall(pool.log)[0][1])
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(started.findall(pool.log)) == 3, timeout=30, message="the restart")
    assert b"restarting in" in pool.log
    restarted = int(started.findall(pool.log)[2][1])
    assert restarted != victim
    for n in range(4):
        tasks.get("whoami").push(str(n))
    wait_until(lambda: len(marks_matching(marks, "whoami-")) == 4, timeout=30, message="4 messages")
    indexes = {m.split("-")[2] for m in marks_matching(marks, "whoami-")}
    assert indexes <= {"0", "1"}
    pool.signal(signal.SIGINT)  # Ctrl-C reaches the parent only; it forwards
    assert pool.wait() == 0, pool.log.decode()


def kill_if_alive(*pids: int) -> None:
    """Leave no test orphan behind, whatever the test's outcome."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except FileNotFoundError:
        return None


def test_a_task_pushing_a_task_reaches_the_workers_server(server, client, marks, tasks):
    tasks.get("relay").push("r")
    worker = WorkerProcess(server, marks, "--instances", "1", "--queues", "fast", "--burst")
    assert worker.wait() == 0, worker.log.decode()
    assert marks_matching(marks, "note-relayed-r"), worker.log.decode()
    assert client.sizeof("failed") == 0


def test_the_worker_reaps_the_orphans_of_its_tasks_and_kills_them_when_it_stops(server, marks, tasks):
    tasks.get("orphan").push("o1")
    tasks.get("orphan").push("o2")
    worker = WorkerProcess(server, marks, "--instances", "1", "--queues", "fast")
    wait_until(lambda: len(marks_matching(marks, "orphan-")) == 2, timeout=30,
               message="both orphans started")
    dead, running = (pid_of(m) for m in marks_matching(marks, "orphan-"))
    try:
        assert parent_of(dead) == parent_of(running) == worker.proc.pid, "adopted by the worker"
        os.kill(dead, signal.SIGKILL)
        wait_until(lambda: parent_of(dead) is None, timeout=20, message="the dead orphan reaped")
        assert worker.proc.poll() is None
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0, worker.log.decode()
        wait_until(lambda: parent_of(running) is None, timeout=20,
                   message="the orphan still running killed when the worker stopped")
    finally:
        kill_if_alive(dead, running)


def test_a_pool_adopts_the_orphans_of_a_killed_worker_and_kills_them_when_it_stops(server, marks,
                                                                                   tasks):
    pool = WorkerProcess(server, marks, "--instances", "2", "--queues", "fast")
    tasks.get("orphan").push("p")
    [mark] = wait_until(lambda: marks_matching(marks, "orphan-p"), timeout=30,
                        message="the orphan started")
    orphan = pid_of(mark)
    try:
        worker = parent_of(orphan)
        assert worker not in (None, pool.proc.pid), "first adopted by the worker that ran the task"
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: parent_of(orphan) == pool.proc.pid, timeout=20,
                   message="the orphan adopted by the pool")
        wait_until(lambda: pool.log.count(b"starting on queues") == 3, timeout=30,
                   message="the killed worker replaced")  # a stop during its back-off is exit 1
        pool.signal(signal.SIGTERM)
        assert pool.wait() == 0, pool.log.decode()
        assert parent_of(orphan) is None, "killed and reaped when the pool stopped"
    finally:
        kill_if_alive(orphan)


LIBRARY_WORKER = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from starlingpy.client import Client
from starlingpy.worker import Worker
from tests.worker.sample_tasks import tasks
client = Client([sys.argv[1]])
Worker(tasks, ["fast"], client=client, adopt_orphans=True).work(burst=True)
print("returned", flush=True)
"""


def test_a_library_caller_of_work_gets_the_clean_up_too(server, marks, tasks):
    tasks.get("orphan").push("lib")
    env = dict(os.environ, SAMPLE_MARKS=str(marks), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", LIBRARY_WORKER, server.address], cwd=REPO, env=env,
                          capture_output=True, timeout=60)
    assert done.returncode == 0 and b"returned" in done.stdout, done.stderr.decode()
    [mark] = marks_matching(marks, "orphan-lib")
    orphan = pid_of(mark)
    try:
        assert b"killed 1 orphaned process(es)" in done.stderr, done.stderr.decode()
        assert parent_of(orphan) is None, "the adopted sleeper did not outlive work()"
    finally:
        kill_if_alive(orphan)


POOL = """
import logging, sys
from starlingpy.backoff import RestartPolicy
from starlingpy.worker.pool import WorkerPool
logging.basicConfig(level=logging.INFO)
child = [sys.executable, "-c", "import sys; sys.exit(int(sys.argv[1]))", sys.argv[1]]
quick = lambda: RestartPolicy(initial=0.01, maximum=0.05, loop_restarts=2, loop_window=60)
sys.exit(WorkerPool(child, 2, policy=quick).run())
"""


@pytest.mark.parametrize("child_exit, pool_exit, starts", [(0, 0, 2), (3, 1, 6)])
def test_a_pool_does_not_restart_a_finished_child_and_gives_up_on_a_crash_loop(child_exit, pool_exit,
                                                                              starts):
    # In a process of its own: the pool makes itself the subreaper of its tree.
    pool = subprocess.run([sys.executable, "-c", POOL, str(child_exit)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert pool.returncode == pool_exit, pool.stderr
    assert pool.stderr.count(": started, pid") == starts, pool.stderr
    if child_exit:
        assert pool.stderr.count("crash loop, not restarting") == 2
    else:
        assert pool.stderr.count("finished (exit status 0)") == 2
