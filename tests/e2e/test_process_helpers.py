"""The process helpers against real processes: pid files (stale
detection) and the zombie finder the orphan reaper uses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from starlingpy.process.pidfile import (
    PidFileError,
    claim_pid_file,
    live_pid,
    pid_alive,
    read_pid,
    release_pid_file,
    write_pid,
)
from starlingpy.process.reaper import zombie_children
from tests.support import wait_until


def test_a_pid_file_is_claimed_unless_a_live_process_owns_it(tmp_path):
    path = tmp_path / "server.pid"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_pid(path, gone.pid)
    claim_pid_file(path)  # stale: replaced
    assert read_pid(path) == os.getpid()
    claim_pid_file(path)  # ours already: fine
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        try:
            write_pid(path, other.pid)
            with pytest.raises(PidFileError, match=str(other.pid)):
                claim_pid_file(path)
            release_pid_file(path)
            assert path.exists(), "not ours: left alone"
        finally:
            other.kill()
    write_pid(path, os.getpid())
    release_pid_file(path)
    assert not path.exists()


def test_pid_file_round_trip_and_stale_detection(tmp_path):
    path = tmp_path / "run" / "x.pid"
    assert read_pid(path) is None and live_pid(path) is None
    write_pid(path, os.getpid())
    assert read_pid(path) == os.getpid()
    # Our own command line has "pytest" (or python) in it, not "no-such-marker".
    assert live_pid(path, marker=None) == os.getpid()
    assert live_pid(path, marker="no-such-marker-in-cmdline") is None
    assert not path.exists(), "a pid file of a process that is not ours is removed as stale"

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_pid(path, gone.pid)
    assert not pid_alive(gone.pid)
    assert live_pid(path, marker=None) is None
    assert not path.exists(), "a pid file of a dead process is removed"

    path.write_text("garbage\n")
    assert read_pid(path) is None and live_pid(path) is None and not path.exists()


def test_a_zombie_counts_as_dead_and_is_found_for_reaping():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # Exited but not reaped yet: our zombie child.
        wait_until(lambda: child.pid in zombie_children(os.getpid()), message="a zombie child")
        assert not pid_alive(child.pid)
    finally:
        child.wait()
    assert child.pid not in zombie_children(os.getpid())
