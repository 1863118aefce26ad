"""The operator's verbs: ``up``, ``down``, ``status``, ``restart``.

Each takes a loaded :class:`TierConfig` and returns a process exit code;
output goes to the given text streams so tests and the CLI share the code.
``status`` follows the LSB convention: 0 when the tier runs, 3 when not,
and 1 when it runs degraded: a process is down or given up on (crash loop).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

import trio

from starlingpy.process.daemon import daemonize
from starlingpy.process.pidfile import live_pid, pid_alive, remove_pid, write_pid
from starlingpy.supervisor.config import TierConfig
from starlingpy.supervisor.queues import queue_sizes
from starlingpy.supervisor.state import load_state, remove_state
from starlingpy.supervisor.tier import SERVER_STOP_GRACE, Tier, pid_path

SUPERVISOR = "supervisor"
NOT_RUNNING = 3
DEGRADED = 1  # (LSB: "program is dead and the pid file exists")


def _supervisor_pid_path(tier: TierConfig) -> Path:
    return pid_path(tier, SUPERVISOR)


def _child_pid_files(tier: TierConfig) -> list[Path]:
    """Pid files of children: workers first, the server last (stop order)."""
    files = [p for p in sorted(tier.settings.run_dir.glob("*.pid"))
             if p.stem != SUPERVISOR]
    return sorted(files, key=lambda p: p.stem == "server")


def _take_lock(tier: TierConfig) -> int | None:
    """Hold the run directory's lock for this process's life, or None if
    another supervisor holds it. The kernel drops it when we die, so it can
    never go stale."""
    tier.settings.run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(tier.settings.run_dir / f"{SUPERVISOR}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def up(tier: TierConfig, *, foreground: bool = False, out: TextIO = sys.stdout,
       err: TextIO = sys.stderr) -> int:
    """Start the tier; detached unless ``foreground``. Refuses if it runs."""
    pid_file = _supervisor_pid_path(tier)
    stale = pid_file.exists()
    running = live_pid(pid_file)
    if running is not None:
        print(f"already running: supervisor pid {running} ({pid_file})", file=err)
        return 1
    if stale:
        print(f"removed stale pid file {pid_file}", file=err)
    leftovers = [(p.stem, pid) for p in _child_pid_files(tier)
                 if (pid := live_pid(p)) is not None]
    if leftovers:
        names = ", ".join(f"{name} (pid {pid})" for name, pid in leftovers)
        print(f"processes of an earlier run still live: {names}; run `starlingpy down` first",
              file=err)
        return 1
    lock = _take_lock(tier)
    if lock is None:
        print(f"already running: another supervisor holds {tier.settings.run_dir}", file=err)
        return 1
    if foreground:
        def report(error: str | None, summary: str = "") -> None:
            print(error or f"{summary} (foreground)", file=err if error else out, flush=True)
    else:
        report = daemonize(tier.settings.log_dir / f"{SUPERVISOR}.log")
    return _run_supervisor(tier, report)


def _run_supervisor(tier: TierConfig, report) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s supervisor[%(process)d] %(levelname)s %(message)s")
    pid_file = _supervisor_pid_path(tier)
    write_pid(pid_file, os.getpid())

    running = Tier(tier)

    def report_after_cleanup(error: str | None) -> None:
        if error is not None:
            remove_pid(pid_file)  # before `up` returns: it leaves nothing behind
            report(error)
            return
        report(None, f"up: supervisor pid {os.getpid()}, server {running.address}, "
                     f"{len(running.workers)} worker(s); logs in {tier.settings.log_dir}")

    try:
        trio.run(running.run, report_after_cleanup)
        return 1 if running.failed else 0
    except BaseException as error:  # tell the waiting `up` why, then fail loudly
        report(f"supervisor failed: {error!r}")
        raise
    finally:
        remove_pid(pid_file)


def _wait_gone(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` is gone (it is not our child, so no waitpid)."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _wait_lock_free(tier: TierConfig, timeout: float) -> None:
    """Until the old supervisor's lock is released (its last thread gone),
    so an `up` right after `down` (as in `restart`) cannot find it held."""
    deadline = time.monotonic() + timeout
    while (fd := _take_lock(tier)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if fd is not None:
        os.close(fd)


def down(tier: TierConfig, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Stop the tier; also cleans up after a supervisor that was killed."""
    timeout = tier.settings.grace_period + SERVER_STOP_GRACE + 15
    pid = live_pid(_supervisor_pid_path(tier))
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout):
            print(f"supervisor pid {pid} did not stop within {timeout:.0f} s", file=err)
            return 1
        remove_pid(_supervisor_pid_path(tier))
        _wait_lock_free(tier, timeout)
        print(f"down: supervisor pid {pid} stopped", file=out)
    # Children of a supervisor that died without stopping them: workers, then server.
    orphans = 0
    for path in _child_pid_files(tier):
        child = live_pid(path)
        if child is None:
            continue
        orphans += 1
        os.kill(child, signal.SIGTERM)
        if not _wait_gone(child, tier.settings.grace_period):
            os.kill(child, signal.SIGKILL)
            _wait_gone(child, 5)
        remove_pid(path)
        print(f"down: stopped orphaned {path.stem} (pid {child})", file=out)
    if pid is None and not orphans:
        print("down: not running", file=out)
    remove_state(tier.settings.run_dir)
    return 0


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def status_report(tier: TierConfig) -> dict:
    """Status as data: the supervisor, each process, each queue's items."""
    now = time.time()
    pid = live_pid(_supervisor_pid_path(tier))
    state = load_state(tier.settings.run_dir) if pid is not None else None
    processes = []
    for record in state.processes if state else []:
        alive = record.pid is not None and pid_alive(record.pid)
        processes.append({
            "name": record.name, "kind": record.kind, "pid": record.pid, "alive": alive,
            "uptime": now - record.started_at if alive and record.started_at else None,
            "restarts": record.restarts, "state": record.state, "last_exit": record.last_exit,
        })
    address = state.server_address if state else tier.server_address
    queues = queue_sizes(address) if pid is not None else None
    down = [p["name"] for p in processes
            if p["state"] == "crash-loop" or (not p["alive"] and p["state"] != "finished")]
    return {
        "running": pid is not None, "supervisor_pid": pid, "down": down,
        "uptime": now - state.started_at if state else None,
        "server_address": address, "processes": processes, "queues": queues,
    }


def status(tier: TierConfig, *, as_json: bool = False, out: TextIO = sys.stdout) -> int:
    """Print each process (pid, alive, uptime, restarts) and each queue's items."""
    report = status_report(tier)
    if as_json:
        print(json.dumps(report, indent=2), file=out)
        return _status_code(report)
    if not report["running"]:
        print(f"not running ({tier.path})", file=out)
        return NOT_RUNNING
    print(f"supervisor pid {report['supervisor_pid']}, up {_duration(report['uptime'] or 0)}, "
          f"server {report['server_address']}", file=out)
    print(f"{'PROCESS':<16}{'PID':>8}  {'ALIVE':<6}{'UPTIME':>10}{'RESTARTS':>10}  STATE",
          file=out)
    for p in report["processes"]:
        uptime = _duration(p["uptime"]) if p["uptime"] is not None else "-"
        extra = f" (last exit: {p['last_exit']})" if p["last_exit"] else ""
        print(f"{p['name']:<16}{p['pid'] or '-':>8}  {'yes' if p['alive'] else 'no':<6}"
              f"{uptime:>10}{p['restarts']:>10}  {p['state']}{extra}", file=out)
    queues = report["queues"]
    if queues is None:
        print("queues: the server does not answer", file=out)
    else:
        print(f"{'QUEUE':<24}{'ITEMS':>8}", file=out)
        for name, items in sorted(queues.items()):
            print(f"{name:<24}{items:>8}", file=out)
    if report["down"]:
        print(f"degraded: down or in a crash loop: {', '.join(report['down'])}", file=out)
    return _status_code(report)


def _status_code(report: dict) -> int:
    if not report["running"]:
        return NOT_RUNNING
    return DEGRADED if report["down"] else 0


def restart(tier: TierConfig, *, foreground: bool = False, out: TextIO = sys.stdout,
            err: TextIO = sys.stderr) -> int:
    """``down`` then ``up``."""
    code = down(tier, out=out, err=err)
    return code if code else up(tier, foreground=foreground, out=out, err=err)


def reload_workers(tier: TierConfig, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Restart only the workers (SIGHUP to the supervisor); the server stays up."""
    pid = live_pid(_supervisor_pid_path(tier))
    if pid is None:
        print("not running", file=err)
        return NOT_RUNNING
    os.kill(pid, signal.SIGHUP)
    print(f"restart: asked supervisor pid {pid} to restart its workers", file=out)
    return 0


__all__ = ["down", "reload_workers", "restart", "status", "status_report", "up"]
