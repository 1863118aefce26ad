"""`python -m bench --quick` end to end: a real server, the real Redis, the table.

No figure is asserted (the machine is shared and noisy): only that every row
is printed, that the JSON agrees with it, and that the workloads did what
they claim (the get scenarios found items, nothing was refused).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.peers import starling_missing

REPO = Path(__file__).resolve().parents[2]
SCENARIO_ROWS = ("set", "get", "mixed", "pipelined set", "pipelined get")
OTHER_ROWS = ("sync always: set ops/s", "replay after SIGTERM: first get",
              "replay after SIGKILL: first get", "RSS with items loaded (live)",
              "RSS after replay (SIGTERM)", "RSS after replay (SIGKILL)",
              "start-up, empty spool: first get")


def test_quick_bench_prints_every_row_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    for row in SCENARIO_ROWS:
        matching = [line for line in lines if line.split("  ")[0].rstrip("*") == row]
        assert len(matching) == 1, f"row {row!r} missing from:\n{run.stdout}"
        # Two verdicts (CPU, multiple of Redis); "-" where a quick run's CPU
        # was below one clock tick.
        verdicts = matching[0].rsplit("|", 2)[1].split(",")
        assert [v.strip() in ("met", "MISSED", "-") for v in verdicts] == [True, True], matching[0]
    for row in OTHER_ROWS:
        assert any(line.startswith(row) for line in lines), f"row {row!r} missing:\n{run.stdout}"

    assert any(line.startswith("fairness: ") and "starlingpy p50" in line and "redis p50" in line
               for line in lines), run.stdout
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    assert report["fairness"]["starlingpy"]["ops"] == report["fairness"]["ops"]
    # Ruby Starling is the third peer wherever ruby and eventmachine are installed.
    if starling_missing() is None:
        assert all(row["starling"]["ops"] > 0 for row in report["scenarios"])
    else:
        assert any("Ruby Starling" in line and "not installed" in line for line in lines)
    assert [row["scenario"] for row in report["scenarios"]] == list(SCENARIO_ROWS)
    for row in report["scenarios"]:
        for system in ("starlingpy", "redis"):
            measured = row[system]
            assert measured["ops"] > 0 and measured["server_cpu_seconds"] >= 0
            assert "error" not in measured["replies"], (row["scenario"], system, measured["replies"])
            if row["scenario"] in ("get", "pipelined get"):
                # Draining a pre-filled queue: every get returned an item.
                assert measured["replies"] == {"hit": measured["ops"]}, (system, measured["replies"])
    replay = report["replay"]
    assert replay["items"] == report["meta"]["sizes"]["replay_items"]
    # Each restart served the first item and kept every other acknowledged one.
    restarts = replay["restarts"]
    assert [r["after"] for r in restarts] == ["SIGTERM"] * 3 + ["SIGKILL"] * 3
    assert [r["items_after"] for r in restarts] == [replay["items"] - n for n in range(1, 7)]
    assert all(r["previous_exit_code"] == 0 for r in restarts if r["after"] == "SIGTERM")
