"""`python -m bench.cpuprofile`: a profiled real server, one small scenario."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_cpuprofile_prints_per_operation_rows() -> None:
    run = subprocess.run([sys.executable, "-m", "bench.cpuprofile", "--ops", "400", "--top", "8", "get"],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("get: 400 ops"), run.stdout
    assert lines[1].split() == ["own", "µs/op", "cum", "µs/op", "calls/op", "function"]
    rows = [line.split(None, 3) for line in lines[2:]]
    assert len(rows) == 8, run.stdout
    calls_per_op = [float(row[2]) for row in rows]
    assert all(value > 0 for value in calls_per_op), run.stdout
    # Every get reply leaves through the server's code: something ran once per op or more.
    assert max(calls_per_op) >= 1.0, run.stdout
