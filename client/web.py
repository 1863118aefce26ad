"""The web tier: a page to submit a program and watch its verdict, and the
JSON API behind it, on Flask, served by waitress.

The request path does two quick things and returns: insert the submission
row (``pending``) and push a ``grade`` task onto the queue. Grading happens
in the workers; the page polls ``GET /api/submissions/<id>`` until the status
is ``done``.

    GET  /                               the page
    GET  /api/problems                   [{id, slug, title, statement, limits...}]
    POST /api/submissions                {problem, language, source} -> 202 {id, status, url}
    GET  /api/submissions/<id>           {id, status, verdict, detail, stdout_excerpt, ...}
    POST /api/problems/<slug>/regrade    queue a re-grade of every submission (low priority)

Every error is answered as JSON ``{"error": ...}``.

Run: ``python -m client.web --port 8080 [--database URL] [--server host:port]``;
it prints ``serving on http://HOST:PORT/`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from flask import Flask, Response, jsonify, request
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from client.database import database_url, make_engine, prepare
from client.models import LANGUAGES, PENDING, Problem, Submission
from starlingpy.webserver import WebServer

log = logging.getLogger("client.web")
PAGE = Path(__file__).with_name("page.html")
MAX_SOURCE_BYTES = 60 * 1024  # fits a MySQL TEXT column (64 KiB - 1)
MAX_BODY_BYTES = 256 * 1024


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Tasks:
    """What the web tier asks of the queue: two pushes. The real one wraps
    ``workers.tasks``; tests may pass their own."""

    def __init__(self, grade: Callable[[int], object], regrade: Callable[[int], object]) -> None:
        self.grade = grade
        self.regrade = regrade


def create_app(engine: Engine, tasks: Tasks) -> Flask:
    """The WSGI application. Thread-safe: one Session per request."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    page = PAGE.read_bytes()

    @app.get("/")
    def index():
        return Response(page, content_type="text/html; charset=utf-8")

    @app.get("/api/problems")
    def list_problems():
        with Session(engine) as session:
            return jsonify([p.to_json() for p in session.scalars(select(Problem).order_by(Problem.id))])

    @app.post("/api/submissions")
    def submit():
        return jsonify(_submit(engine, tasks, _json_body())), 202

    @app.get("/api/submissions/<int:submission_id>")
    def submission(submission_id: int):
        with Session(engine) as session:
            found = session.get(Submission, submission_id)
            if found is None:
                raise HttpError(404, f"no submission {submission_id}")
            return jsonify(found.to_json())

    @app.post("/api/problems/<slug>/regrade")
    def regrade(slug: str):
        with Session(engine) as session:
            problem = session.scalar(select(Problem).where(Problem.slug == slug))
            if problem is None:
                raise HttpError(404, f"no such problem: {slug!r}")
            problem_id = problem.id
        tasks.regrade(problem_id)
        return jsonify({"problem": slug, "queued": True}), 202

    @app.errorhandler(HttpError)
    def our_error(error: HttpError):
        return jsonify({"error": str(error)}), error.status

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):  # 404, 405, 413 from Flask itself
        return jsonify({"error": error.description}), error.code

    @app.errorhandler(Exception)
    def bug(error: Exception):  # answers 500; the server thread lives on
        log.error("%s %s failed", request.method, request.path, exc_info=error)
        return jsonify({"error": "internal error"}), 500

    @app.after_request
    def no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        return response

    return app


def _submit(engine: Engine, tasks: Tasks, data: dict) -> dict:
    """Validate, insert the row, push the task; nothing slow."""
    slug, language, source = data.get("problem"), data.get("language"), data.get("source")
    if language not in LANGUAGES:
        raise HttpError(400, f"language must be one of {', '.join(LANGUAGES)}")
    if not isinstance(source, str) or not source.strip():
        raise HttpError(400, "source is empty")
    if len(source.encode()) > MAX_SOURCE_BYTES:
        raise HttpError(413, f"source over {MAX_SOURCE_BYTES} bytes")
    with Session(engine) as session:
        problem = session.scalar(select(Problem).where(Problem.slug == slug))
        if problem is None:
            raise HttpError(400, f"no such problem: {slug!r}")
        submission = Submission(problem=problem, language=language, source=source, status=PENDING)
        session.add(submission)
        session.commit()
        submission_id = submission.id
    # After the commit: a worker that takes the task at once finds the row.
    try:
        tasks.grade(submission_id)
    except Exception:  # whatever the queue said, the student must submit again
        log.exception("could not queue submission %d", submission_id)
        with Session(engine) as session:  # no row may wait for a task that never comes
            session.delete(session.get(Submission, submission_id))
            session.commit()
        raise HttpError(503, "the grading queue is unavailable, please submit again") from None
    return {"id": submission_id, "status": PENDING, "url": f"/api/submissions/{submission_id}"}


def _json_body() -> dict:
    if not request.get_data():  # Flask answers 413 past MAX_CONTENT_LENGTH
        return {}
    data = request.get_json(force=True, silent=True)
    if data is None:
        raise HttpError(400, "the body must be JSON")
    if not isinstance(data, dict):
        raise HttpError(400, "the body must be a JSON object")
    return data


def queue_tasks(server: str | None) -> Tasks:
    """The real pushes: ``workers.tasks`` onto the starlingpy server."""
    from workers import tasks

    tasks.connect(server)
    return Tasks(grade=tasks.grade.push, regrade=tasks.regrade_problem.push)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m client.web", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--database", help="SQLAlchemy URL (default: $APP_DATABASE_URL or var/)")
    parser.add_argument("--server", help="starlingpy host:port (default: $STARLINGPY_SERVER "
                                         "or 127.0.0.1:22122)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s web %(levelname)s %(message)s")
    engine = make_engine(database_url(args.database))
    prepare(engine)
    server = WebServer(create_app(engine, queue_tasks(args.server)), args.host, args.port)
    print(f"serving on {server.url}/", flush=True)
    server.run()  # until Ctrl-C (waitress stops its threads) or SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main())
