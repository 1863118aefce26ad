"""Reading CPU time and RSS of a real process from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench import procstat
from tests.support import wait_until


def test_cpu_seconds_grow_while_a_process_spins() -> None:
    # A child that burns CPU until told to stop; we wait for its counter to move.
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.monotonic() + 30
        while procstat.cpu_seconds(child.pid) < 0.05:
            assert time.monotonic() < deadline, "the spinning child never showed CPU time"
            time.sleep(0.01)  # polling interval only; the condition is the CPU counter
    finally:
        child.kill()
        child.wait()


def test_rss_is_this_process_size() -> None:
    before = procstat.rss_bytes(os.getpid())
    block = bytearray(64 * 1024 * 1024)  # touched: zero-filled pages are resident
    for i in range(0, len(block), 4096):
        block[i] = 1
    assert procstat.rss_bytes(os.getpid()) >= before + 60 * 1024 * 1024


def test_pids_named_finds_a_child_by_its_comm() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        # The child is named "sleep" only once it has exec'd.
        wait_until(lambda: child.pid in procstat.pids_named("sleep"), 10, message="sleep's comm")
    finally:
        child.kill()
        child.wait()
