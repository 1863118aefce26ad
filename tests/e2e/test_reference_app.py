"""The reference application end to end: ``starlingpy up`` with the
server and four grading workers, the web app as a subprocess, 40 programs
submitted over HTTP (correct, wrong, infinite loop, crash, memory hog, fork
bomb, huge output), one worker killed with SIGKILL mid-grading; every
submission must reach exactly one final verdict, the right one; ``status``
shows the restarted worker; ``down`` leaves no process and no pid file.

Run against SQLite, and the same run against PostgreSQL in a schema of its
own (there with every kind of program once, to keep the suite fast).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import urllib.request
import uuid
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from client.models import Judgement, Submission
from client.submit import submit, wait_for_verdict
from tests.e2e.tier_helpers import (
    WebApp,
    alive,
    graders_pool,
    logs,
    starlingpy,
    tier_status,
    write_tier_config,
)
from tests.support import wait_until

PG_ADMIN = "host=127.0.0.1 port=5432 dbname=test user=postgres"

HELLO = 'print("Hello, world!")'
PROGRAMS = {  # name: (problem, language, source, expected verdict)
    "hello": ("hello", "python", HELLO, "accepted"),
    "sum": ("sum", "python", "import sys\nprint(sum(int(x) for x in sys.stdin))", "accepted"),
    "reverse": ("reverse", "python", "import sys\nprint(''.join(reversed(sys.stdin.readlines())), end='')",
                "accepted"),
    "wrong": ("hello", "python", 'print("Hello, World")', "wrong_answer"),
    "wrong_sum": ("sum", "python", "print(42)", "wrong_answer"),
    "loop": ("hello", "python", "while True:\n    pass", "time_limit"),
    "crash": ("hello", "python", "print('Hello, world!')\nraise SystemExit(3)", "runtime_error"),
    "divide": ("sum", "python", "print(1 // 0)", "runtime_error"),
    "memory": ("hello", "python", "x = bytearray(1 << 30)\nprint(len(x))", "memory_limit"),
    "fork_bomb": ("hello", "python", "import os\nwhile True:\n    os.fork()", "runtime_error"),
    "huge_output": ("hello", "python", "while True:\n    print('x' * 4096)", "output_limit"),
    "c_hello": ("hello", "c", '#include <stdio.h>\nint main(void) { puts("Hello, world!"); return 0; }',
                "accepted"),
}
# 40 in all, the slow ones (loops) few enough for a 2-core machine.
MIX_40 = (["hello"] * 8 + ["sum"] * 4 + ["reverse"] * 3 + ["c_hello"] * 2 + ["wrong"] * 4
          + ["wrong_sum"] * 2 + ["loop"] * 3 + ["crash"] * 2 + ["divide"] * 2 + ["memory"] * 3
          + ["fork_bomb"] * 3 + ["huge_output"] * 4)
# Every kind once (loops twice: one gets its worker killed), for the second database.
MIX_EVERY_KIND = list(PROGRAMS) + ["loop"]
assert len(MIX_40) == 40


def sandboxed_processes() -> list[int]:
    """Live processes of the graders' sandbox uids (61001..61004)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
        except (OSError, ValueError):
            continue
        uid = int(re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE).group(1))
        state = re.search(r"^State:\s+(\S)", status, re.MULTILINE).group(1)
        if 61001 <= uid <= 61004 and state not in "ZX":
            found.append(int(entry.name))
    return found


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
def postgres_url():
    psycopg = pytest.importorskip("psycopg")
    schema = f"refapp_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {error}")
    # Every connection of the app uses only this schema.
    yield (f"postgresql+psycopg://postgres@127.0.0.1:5432/test"
           f"?options=-csearch_path%3D{schema}")
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def run_tier(tmp_path: Path, database_url: str, mix: list[str], regrade: bool = False) -> None:
    if shutil.which("gcc") is None:
        mix = [name for name in mix if not name.startswith("c_")]
    config = write_tier_config(tmp_path, supervisor="grace_period = 10\nbackoff_initial = 0.2\n",
                               pools=graders_pool(database_url, instances=4))
    web = None
    engine = sqlalchemy.create_engine(database_url)
    try:
        up = starlingpy("up", "-c", str(config))
        assert up.returncode == 0, up.stderr + logs(config)
        report = json.loads(starlingpy("status", "-c", str(config), "--json").stdout)
        workers = {p["pid"]: p["name"] for p in report["processes"] if p["kind"] == "worker"}
        assert len(workers) == 4 and all(alive(pid) for pid in workers)

        web = WebApp(database_url, report["server_address"])
        expected = {}
        for name in mix:
            problem, language, source, verdict = PROGRAMS[name]
            expected[submit(web.url, problem, source, language)] = (name, verdict)

        # SIGKILL the worker that is grading an infinite loop, mid-grading.
        loops = [i for i, (name, _) in expected.items() if name == "loop"]

        def grading_a_loop():
            with Session(engine) as session:
                row = session.execute(select(Submission.id, Submission.grader).where(
                    Submission.id.in_(loops), Submission.status == "running")).first()
            return row
        victim_submission, grader = wait_until(grading_a_loop, timeout=60, interval=0.02,
                                               message="a worker grading an infinite loop")
        victim = int(grader.rsplit(":", 1)[1])
        assert victim in workers
        os.kill(victim, signal.SIGKILL)

        for submission_id in expected:
            wait_for_verdict(web.url, submission_id, timeout=120)

        with Session(engine) as session:
            rows = {s.id: s for s in session.scalars(select(Submission))}
            judgements = dict(session.execute(
                select(Judgement.submission_id, func.count()).group_by(Judgement.submission_id)).all())
            wrong = {i: (name, want, rows[i].verdict, rows[i].detail[:200])
                     for i, (name, want) in expected.items() if rows[i].verdict != want}
            assert not wrong, f"wrong verdicts: {wrong}\n{logs(config)}"
            assert all(rows[i].status == "done" for i in expected)
            assert judgements == {i: 1 for i in expected}, "exactly one final verdict each"
            # The killed worker's submission went back to the queue and was graded again.
            assert rows[victim_submission].attempts >= 2

        if regrade:
            # The batch job on the low-priority queue: every `sum` submission graded again.
            sums = {i for i, (name, _) in expected.items() if PROGRAMS[name][0] == "sum"}
            request = urllib.request.Request(web.url + "/api/problems/sum/regrade", data=b"{}",
                                             method="POST")
            with urllib.request.urlopen(request, timeout=30) as reply:
                assert reply.status == 202

            def regraded():
                with Session(engine) as session:
                    return dict(session.execute(
                        select(Judgement.submission_id, Judgement.verdict)
                        .where(Judgement.kind == "regrade")).all())
            again = wait_until(lambda: (r := regraded()).keys() == sums and r, timeout=60,
                               message="every sum submission re-graded")
            assert again == {i: expected[i][1] for i in sums}

        def restarted():
            now = tier_status(config)
            entry = next(p for p in now["processes"] if p["name"] == workers[victim])
            return entry["alive"] and entry["restarts"] >= 1 and entry["pid"] != victim and now
        now = wait_until(restarted, timeout=30, message="the killed worker restarted")
        assert now["queues"].get("submissions", 0) == 0
        text = starlingpy("status", "-c", str(config)).stdout
        assert re.search(rf"{re.escape(workers[victim])}\s+\d+\s+yes\s+\S+\s+1\s+running", text), text

        everyone = [report["supervisor_pid"], *workers,
                    *(p["pid"] for p in now["processes"])]
        down = starlingpy("down", "-c", str(config))
        assert down.returncode == 0, down.stderr
        assert not any(alive(pid) for pid in everyone)
        assert list((tmp_path / "run").glob("*.pid")) == []
        assert sandboxed_processes() == [], "a graded program outlived `down`"
    finally:
        if web is not None:
            web.stop()
        starlingpy("down", "-c", str(config))
        engine.dispose()


def test_forty_submissions_on_sqlite(tmp_path, sqlite_url):
    run_tier(tmp_path, sqlite_url, MIX_40, regrade=True)


@pytest.mark.db
def test_the_same_run_on_postgresql(tmp_path, postgres_url):
    run_tier(tmp_path, postgres_url, MIX_EVERY_KIND)
