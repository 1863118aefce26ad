"""The reference application's web app: its endpoints over real HTTP
against a real SQLite database (its task pushes recorded, to see exactly
what the web tier asks of the queue; the full tier runs in
tests/e2e/test_reference_app.py, the grading rules in tests/unit)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from client.database import make_engine, prepare
from client.models import Submission
from client.submit import SubmitError, fetch, submit
from client.web import Tasks, create_app
from starlingpy.webserver import WebServer


@pytest.fixture
def web(tmp_path):
    """The web app on a free loopback port, a real SQLite file, pushes recorded."""
    engine = make_engine(f"sqlite:///{tmp_path / 'app.db'}")
    prepare(engine)
    pushed: list[tuple[str, int]] = []
    tasks = Tasks(grade=lambda i: pushed.append(("grade", i)),
                  regrade=lambda i: pushed.append(("regrade", i)))
    try:
        with WebServer(create_app(engine, tasks)) as server:
            yield server.url, engine, pushed
    finally:
        engine.dispose()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_page_and_problem_list(web):
    url, _, _ = web
    status, page = get(url + "/")
    assert status == 200 and b'id="source"' in page and b"/api/submissions" in page
    status, body = get(url + "/api/problems")
    slugs = [p["slug"] for p in json.loads(body)]
    assert status == 200 and slugs == ["hello", "sum", "reverse"]


def test_submit_writes_a_pending_row_and_pushes_one_grade_task(web):
    url, engine, pushed = web
    submission_id = submit(url, "hello", "print('Hello, world!')")
    assert pushed == [("grade", submission_id)]
    with Session(engine) as session:
        row = session.get(Submission, submission_id)
        assert (row.status, row.verdict, row.language, row.source) == (
            "pending", None, "python", "print('Hello, world!')")
    shown = fetch(url, submission_id)
    assert (shown["id"], shown["status"], shown["problem"]) == (submission_id, "pending", "hello")


@pytest.mark.parametrize("body, status, reason", [
    ({"problem": "nope", "language": "python", "source": "x"}, 400, "no such problem"),
    ({"problem": "hello", "language": "cobol", "source": "x"}, 400, "language"),
    ({"problem": "hello", "language": "python", "source": "   "}, 400, "empty"),
    ({"problem": "hello", "language": "python", "source": "x" * 70000}, 413, "source over"),
])
def test_bad_submissions_are_refused_and_nothing_is_pushed(web, body, status, reason):
    url, engine, pushed = web
    with pytest.raises(SubmitError, match=f"{status}: .*{reason}"):
        submit(url, body["problem"], body["source"], body["language"])
    assert pushed == []
    with Session(engine) as session:
        assert session.scalars(select(Submission)).all() == []


def test_not_json_and_unknown_pages(web):
    url, _, pushed = web
    request = urllib.request.Request(url + "/api/submissions", data=b"{nope", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    assert get(url + "/api/submissions/999")[0] == 404
    assert get(url + "/nothing")[0] == 404
    too_big = urllib.request.Request(url + "/api/submissions", data=b"x" * (300 * 1024), method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(too_big, timeout=10)
    assert caught.value.code == 413 and "error" in json.loads(caught.value.read())
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(urllib.request.Request(url + "/api/problems", method="DELETE"), timeout=10)
    assert caught.value.code == 405 and "error" in json.loads(caught.value.read())
    assert pushed == []


def test_regrade_pushes_the_batch_job_with_the_problem_id(web):
    url, _, pushed = web
    request = urllib.request.Request(url + "/api/problems/sum/regrade", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 202
    problems = json.loads(get(url + "/api/problems")[1])
    assert pushed == [("regrade", next(p["id"] for p in problems if p["slug"] == "sum"))]


def test_when_the_queue_refuses_the_row_is_removed_and_the_student_told(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'app.db'}")
    prepare(engine)

    def queue_down(submission_id):
        raise ConnectionRefusedError("no server")
    try:
        with WebServer(create_app(engine, Tasks(grade=queue_down, regrade=queue_down))) as server:
            with pytest.raises(SubmitError, match="503: the grading queue is unavailable"):
                submit(server.url, "hello", "print(1)")
        with Session(engine) as session:
            assert session.scalars(select(Submission)).all() == []
    finally:
        engine.dispose()
