"""The web tier: a page to submit a program and watch its verdict, and the
JSON API behind it. Standard library only (``wsgiref``), threaded.

The request path does two quick things and returns: insert the submission
row (``pending``) and push a ``grade`` task onto the queue. Grading happens
in the workers; the page polls ``GET /api/submissions/<id>`` until the status
is ``done``.

    GET  /                               the page
    GET  /api/problems                   [{id, slug, title, statement, limits...}]
    POST /api/submissions                {problem, language, source} -> 202 {id, status, url}
    GET  /api/submissions/<id>           {id, status, verdict, detail, stdout_excerpt, ...}
    POST /api/problems/<slug>/regrade    queue a re-grade of every submission (low priority)

Run: ``python -m client.web --port 8080 [--database URL] [--server host:port]``;
it prints ``serving on http://HOST:PORT/`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from client.database import database_url, make_engine, prepare
from client.models import LANGUAGES, PENDING, Problem, Submission

log = logging.getLogger("client.web")
PAGE = Path(__file__).with_name("page.html")
MAX_SOURCE_BYTES = 60 * 1024  # fits a MySQL TEXT column (64 KiB - 1)
MAX_BODY_BYTES = 256 * 1024
_SUBMISSION = re.compile(r"^/api/submissions/(\d+)$")
_REGRADE = re.compile(r"^/api/problems/([A-Za-z0-9_-]+)/regrade$")


class HttpError(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class Tasks:
    """What the web tier asks of the queue: two pushes. The real one wraps
    ``workers.tasks``; tests may pass their own."""

    def __init__(self, grade: Callable[[int], object], regrade: Callable[[int], object]) -> None:
        self.grade = grade
        self.regrade = regrade


class App:
    """The WSGI application. Thread-safe: one Session per request."""

    def __init__(self, engine: Engine, tasks: Tasks) -> None:
        self.engine = engine
        self.tasks = tasks
        self.page = PAGE.read_bytes()

    def __call__(self, environ, start_response) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        try:
            status, content_type, body = self.route(method, path, environ)
        except HttpError as error:
            status, content_type = error.status, "application/json"
            body = json.dumps({"error": str(error)}).encode()
        except Exception:  # a bug answers 500; it must not kill the server thread
            log.exception("%s %s failed", method, path)
            status, content_type = "500 Internal Server Error", "application/json"
            body = b'{"error": "internal error"}'
        start_response(status, [("Content-Type", content_type),
                                ("Content-Length", str(len(body))),
                                ("Cache-Control", "no-store")])
        return [body]

    def route(self, method: str, path: str, environ) -> tuple[str, str, bytes]:
        if path == "/" and method == "GET":
            return "200 OK", "text/html; charset=utf-8", self.page
        if path == "/api/problems" and method == "GET":
            return _json(self.list_problems())
        if path == "/api/submissions" and method == "POST":
            return _json(self.submit(_read_json(environ)), "202 Accepted")
        if (match := _SUBMISSION.match(path)) and method == "GET":
            return _json(self.submission(int(match.group(1))))
        if (match := _REGRADE.match(path)) and method == "POST":
            return _json(self.regrade(match.group(1)), "202 Accepted")
        raise HttpError("404 Not Found", f"no such page: {method} {path}")

    def list_problems(self) -> list[dict]:
        with Session(self.engine) as session:
            return [p.to_json() for p in session.scalars(select(Problem).order_by(Problem.id))]

    def submit(self, data: dict) -> dict:
        """Validate, insert the row, push the task; nothing slow."""
        slug, language, source = data.get("problem"), data.get("language"), data.get("source")
        if language not in LANGUAGES:
            raise HttpError("400 Bad Request", f"language must be one of {', '.join(LANGUAGES)}")
        if not isinstance(source, str) or not source.strip():
            raise HttpError("400 Bad Request", "source is empty")
        if len(source.encode()) > MAX_SOURCE_BYTES:
            raise HttpError("413 Payload Too Large", f"source over {MAX_SOURCE_BYTES} bytes")
        with Session(self.engine) as session:
            problem = session.scalar(select(Problem).where(Problem.slug == slug))
            if problem is None:
                raise HttpError("400 Bad Request", f"no such problem: {slug!r}")
            submission = Submission(problem=problem, language=language, source=source,
                                    status=PENDING)
            session.add(submission)
            session.commit()
            submission_id = submission.id
        # After the commit: a worker that takes the task at once finds the row.
        try:
            self.tasks.grade(submission_id)
        except Exception:  # whatever the queue said, the student must submit again
            log.exception("could not queue submission %d", submission_id)
            with Session(self.engine) as session:  # no row may wait for a task that never comes
                session.delete(session.get(Submission, submission_id))
                session.commit()
            raise HttpError("503 Service Unavailable",
                            "the grading queue is unavailable, please submit again") from None
        return {"id": submission_id, "status": PENDING,
                "url": f"/api/submissions/{submission_id}"}

    def submission(self, submission_id: int) -> dict:
        with Session(self.engine) as session:
            submission = session.get(Submission, submission_id)
            if submission is None:
                raise HttpError("404 Not Found", f"no submission {submission_id}")
            return submission.to_json()

    def regrade(self, slug: str) -> dict:
        with Session(self.engine) as session:
            problem = session.scalar(select(Problem).where(Problem.slug == slug))
            if problem is None:
                raise HttpError("404 Not Found", f"no such problem: {slug!r}")
            problem_id = problem.id
        self.tasks.regrade(problem_id)
        return {"problem": slug, "queued": True}


def _json(value, status: str = "200 OK") -> tuple[str, str, bytes]:
    return status, "application/json", json.dumps(value).encode()


def _read_json(environ) -> dict:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise HttpError("400 Bad Request", "bad Content-Length") from None
    if length > MAX_BODY_BYTES:
        raise HttpError("413 Payload Too Large", "request body too large")
    try:
        data = json.loads(environ["wsgi.input"].read(length) or b"{}")
    except ValueError:
        raise HttpError("400 Bad Request", "the body must be JSON") from None
    if not isinstance(data, dict):
        raise HttpError("400 Bad Request", "the body must be a JSON object")
    return data


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:
        log.debug("%s " + format, self.address_string(), *args)


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
    app = App(engine, queue_tasks(args.server))
    with make_server(args.host, args.port, app, server_class=ThreadingWSGIServer,
                     handler_class=QuietHandler) as httpd:
        host, port = httpd.server_address[:2]
        print(f"serving on http://{host}:{port}/", flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
