"""The supervisor end to end, as an operator uses it: ``starlingpy up``,
``status``, ``down`` and ``restart`` as subprocesses, with a real server and
real worker processes (a tiny task module written for the test)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from starlingpy.client import Client
from starlingpy.worker.tasks import TaskMessage
from tests.e2e.tier_helpers import alive, logs, starlingpy, tier_status, write_tier_config
from tests.support import REPO, ServerProcess, wait_until

TASKS = '''
import time
from pathlib import Path
from starlingpy.client import Client
from starlingpy.worker.tasks import TaskSet
tasks = TaskSet("echo", client_factory=lambda: Client(["127.0.0.1:1"]))

@tasks.task(queue="echo")
def echo(text):
    return text

@tasks.task(queue="echo")
def block(marker):
    """Never finishes on its own: only a cold stop ends it."""
    Path(marker).write_text("started")
    while True:
        time.sleep(0.05)
'''


def make_tier(tmp_path: Path, *, module: str = "echo_tasks", instances: int = 2,
              grace: float = 5, extra: str = "", pool: bool = True) -> Path:
    (tmp_path / "echo_tasks.py").write_text(TASKS)
    pools = textwrap.dedent(f"""\
        [pools.echo]
        module = "{module}"
        queues = ["echo", "echo_low"]
        instances = {instances}
        """)
    return write_tier_config(tmp_path, supervisor=f"grace_period = {grace}\nbackoff_initial = 0.1\n"
                             f"{extra}\n", pools=pools if pool else "")


def status_cli(config: Path) -> dict:
    result = starlingpy("status", "-c", str(config), "--json")
    assert result.returncode in (0, 3), result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def tier(tmp_path):
    config = make_tier(tmp_path)
    yield config
    starlingpy("down", "-c", str(config))  # whatever the test did, leave nothing running


def test_up_status_kill_restart_down(tier):
    up = starlingpy("up", "-c", str(tier))
    assert up.returncode == 0, up.stderr + logs(tier)
    assert up.stdout.startswith("up: supervisor pid") and "2 worker(s)" in up.stdout
    report = status_cli(tier)
    assert report["running"] and alive(report["supervisor_pid"])
    names = [p["name"] for p in report["processes"]]
    assert names == ["server", "echo.1", "echo.2"]
    assert all(p["alive"] and p["restarts"] == 0 and p["state"] == "running"
               for p in report["processes"])
    assert report["queues"] is not None  # the server answered stats

    second = starlingpy("up", "-c", str(tier))
    assert second.returncode == 1 and "already running" in second.stderr

    victim = report["processes"][1]["pid"]
    os.kill(victim, signal.SIGKILL)

    def restarted():
        worker = tier_status(tier)["processes"][1]
        return worker["alive"] and worker["restarts"] == 1 and worker["pid"] != victim and worker
    worker = wait_until(restarted, timeout=30, message="echo.1 restarted")
    assert worker["last_exit"] == "signal 9"
    text = starlingpy("status", "-c", str(tier)).stdout
    assert "echo.1" in text and "(last exit: signal 9)" in text and "PROCESS" in text

    # `restart --workers` (SIGHUP): every worker is replaced, the server stays.
    assert starlingpy("restart", "--workers", "-c", str(tier)).returncode == 0

    def all_replaced():
        now = tier_status(tier)["processes"]
        return (all(p["alive"] for p in now) and now[2]["restarts"] == 1
                and now[1]["restarts"] == 2 and now)
    now = wait_until(all_replaced, timeout=30, message="workers restarted by SIGHUP")
    assert now[0]["pid"] == report["processes"][0]["pid"], "the server was not restarted"

    everyone = [report["supervisor_pid"], worker["pid"], *(p["pid"] for p in now),
                *(p["pid"] for p in report["processes"])]
    down = starlingpy("down", "-c", str(tier))
    assert down.returncode == 0, down.stderr
    assert not any(alive(pid) for pid in everyone)
    assert list((tier.parent / "run").glob("*.pid")) == []
    assert not (tier.parent / "run" / "state.json").exists()
    assert starlingpy("status", "-c", str(tier)).returncode == 3
    log = (tier.parent / "log" / "supervisor.log").read_text()
    assert "echo.1: died (signal 9), restarting" in log


@pytest.fixture
def server_only_tier(tmp_path):
    config = make_tier(tmp_path, pool=False)
    yield config
    starlingpy("down", "-c", str(config))


def test_stale_pid_file_then_a_dead_server_then_restart(server_only_tier):
    tier = server_only_tier  # the server alone: this test is about the server
    run = tier.parent / "run"
    run.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / "supervisor.pid").write_text(f"{dead.pid}\n")
    up = starlingpy("up", "-c", str(tier))
    assert up.returncode == 0, up.stderr + logs(tier)
    assert "removed stale pid file" in up.stderr
    pid = int((run / "supervisor.pid").read_text())
    assert pid != dead.pid and alive(pid)

    # The server dies: it comes back on the same address (port 0 was resolved once).
    before = tier_status(tier)
    os.kill(before["processes"][0]["pid"], signal.SIGKILL)

    def server_back():
        now = tier_status(tier)
        server = now["processes"][0]
        return server["alive"] and server["restarts"] == 1 and now["queues"] is not None and now
    now = wait_until(server_back, timeout=30, message="the server restarted and answering")
    assert now["server_address"] == before["server_address"]
    restart = starlingpy("restart", "-c", str(tier))
    assert restart.returncode == 0, restart.stderr + logs(tier)
    new_pid = int((run / "supervisor.pid").read_text())
    assert new_pid != pid and alive(new_pid) and not alive(pid)
    assert starlingpy("down", "-c", str(tier)).returncode == 0
    assert list(run.glob("*.pid")) == []


CRASHING_TASKS = '''
import os, threading
from starlingpy.worker.tasks import TaskSet
tasks = TaskSet("crashing")

@tasks.task(queue="echo")
def echo(text):
    return text

threading.Timer(0.3, os._exit, (3,)).start()  # imports fine, then dies
'''


def test_up_fails_when_a_pool_cannot_import_its_module(tmp_path):
    config = make_tier(tmp_path, module="no_such_module_anywhere", instances=2)
    up = starlingpy("up", "-c", str(config))
    assert up.returncode == 1, up.stdout
    assert "worker echo.1 (no_such_module_anywhere) failed to start" in up.stderr
    assert "No module named 'no_such_module_anywhere'" in up.stderr
    assert list((tmp_path / "run").glob("*.pid")) == []  # nothing left running
    assert starlingpy("status", "-c", str(config)).returncode == 3


def test_a_pool_that_keeps_crashing_is_reported_not_respawned(tmp_path):
    config = make_tier(tmp_path, module="crashing_tasks", instances=1,
                       extra="crash_loop_restarts = 1\ncrash_loop_window = 600")
    (tmp_path / "crashing_tasks.py").write_text(CRASHING_TASKS)
    try:
        assert starlingpy("up", "-c", str(config)).returncode == 0, logs(config)

        def crash_looping():
            worker = tier_status(config)["processes"][1]
            return worker["state"] == "crash-loop" and worker
        worker = wait_until(crash_looping, timeout=30, message="crash-loop state")
        assert worker["restarts"] == 1 and not worker["alive"]
        assert tier_status(config)["processes"][0]["alive"], "the server stays up"
        assert "crash loop, not restarting" in (tmp_path / "log" / "supervisor.log").read_text()
        status = starlingpy("status", "-c", str(config))
        assert status.returncode == 1 and "degraded" in status.stdout  # a script sees it
        assert starlingpy("status", "--json", "-c", str(config)).returncode == 1

        # An operator's `restart --workers` gives it a fresh start (and it loops again).
        assert starlingpy("restart", "--workers", "-c", str(config)).returncode == 0
        wait_until(lambda: tier_status(config)["processes"][1]["restarts"] == 3
                   and tier_status(config)["processes"][1]["state"] == "crash-loop",
                   timeout=30, message="revived, then a crash loop again")
    finally:
        starlingpy("down", "-c", str(config))


def test_a_server_that_cannot_start_fails_up_with_its_output(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = make_tier(tmp_path, instances=1)
        config.write_text(config.read_text().replace("port = 0", f"port = {taken.getsockname()[1]}"))
        up = starlingpy("up", "-c", str(config))
    assert up.returncode == 1
    assert "the server failed to start" in up.stderr and "Address already in use" in up.stderr
    assert list((tmp_path / "run").glob("*.pid")) == []
    assert starlingpy("status", "-c", str(config)).returncode == 3


def test_down_stops_a_busy_worker_warm_then_cold_and_its_message_survives(tmp_path):
    config = make_tier(tmp_path, instances=1, grace=1)
    marker = tmp_path / "started"
    try:
        assert starlingpy("up", "-c", str(config)).returncode == 0, logs(config)
        address = tier_status(config)["server_address"]
        with Client([address]) as client:
            client.set("echo", TaskMessage(task="block", args=(str(marker),)).to_dict())
        wait_until(marker.exists, timeout=30, message="the blocking task started")
        down = starlingpy("down", "-c", str(config))
        assert down.returncode == 0, down.stderr
        log = (tmp_path / "log" / "supervisor.log").read_text()
        assert "echo.1: still busy after 1.0 s, stopping it cold" in log
        assert "echo.1: stopped" in log and "echo.1: did not stop" not in log
    finally:
        starlingpy("down", "-c", str(config))
    # The cold stop aborted the read: the message is back in the (durable) queue.
    with ServerProcess(tmp_path / "spool") as server, Client([server.address]) as client:
        assert client.sizeof("echo") == 1


def test_a_wrong_config_names_key_and_line(tmp_path):
    config = make_tier(tmp_path, instances=2)
    config.write_text(config.read_text().replace("instances = 2", "instances = -2"))
    result = starlingpy("up", "-c", str(config))
    assert result.returncode == 2
    line = config.read_text().splitlines().index("instances = -2") + 1
    assert f"{config}:{line}: key 'pools.echo.instances'" in result.stderr
    assert not (tmp_path / "run" / "supervisor.pid").exists()


def test_foreground_stops_on_sigterm_and_down_cleans_after_a_killed_supervisor(tmp_path):
    config = make_tier(tmp_path, instances=1)
    proc = subprocess.Popen([sys.executable, "-m", "starlingpy", "up", "-c", str(config),
                             "--foreground"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().startswith("up: supervisor pid"), logs(config)
        report = tier_status(config)
        assert report["supervisor_pid"] == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not any(alive(p["pid"]) for p in report["processes"])
        assert list((tmp_path / "run").glob("*.pid")) == []

        # Now kill the supervisor itself: its children are orphans; `down` finds them.
        assert starlingpy("up", "-c", str(config)).returncode == 0, logs(config)
        report = tier_status(config)
        os.kill(report["supervisor_pid"], signal.SIGKILL)
        wait_until(lambda: not alive(report["supervisor_pid"]), message="supervisor gone")
        refused = starlingpy("up", "-c", str(config))
        assert refused.returncode == 1 and "still live" in refused.stderr
        down = starlingpy("down", "-c", str(config))
        assert down.returncode == 0 and "orphaned" in down.stdout
        assert not any(alive(p["pid"]) for p in report["processes"])
        assert list((tmp_path / "run").glob("*.pid")) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        starlingpy("down", "-c", str(config))
