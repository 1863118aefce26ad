"""The dashboard's web application (Flask; served by waitress).

    GET  /                      the page (page.html, charts.js: no asset from elsewhere)
    GET  /api/queues            the last hour of depth and rates (see history.py)
    GET  /api/workers           the supervisor's processes, when a tier config was given
    GET  /api/failed            the failure queue, with tracebacks
    POST /api/failed/retry      {"ids": [...]}: back to their queues as first attempts
    POST /api/failed/drop       {"ids": [...]}: removed for good
    GET  /metrics               the supervised workers' Prometheus metrics (with a tier config)

The two POSTs accept only ``application/json`` bodies, which a form on
another site cannot send without the browser asking first (CORS preflight,
which we never answer): a page elsewhere cannot retry or drop by itself.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from flask import Flask, Response, jsonify, request
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from werkzeug.exceptions import HTTPException

from starlingpy.dashboard.history import QueueHistory
from starlingpy.worker.failed import FailedItem, drop_failed, list_failed, retry_failed

log = logging.getLogger("starlingpy.dashboard")

HERE = Path(__file__).parent
MAX_IDS = 1000
ASSETS = {"charts.js": "text/javascript; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}


def create_app(history: QueueHistory, client, *, failed_queue: str = "failed", failed_limit: int = 100,
               processes: Callable[[], dict] | None = None,
               worker_metrics: Callable[[], bytes] | None = None,
               login: Callable[[str, str], str] | None = None) -> Flask:
    """``client``: a (thread-safe) starlingpy Client for the failure queue;
    ``processes()``: the supervisor's status report; ``worker_metrics()``:
    the exposition text of its workers (both absent without a tier);
    ``login(name, password)``: "ok", "forbidden" or "unknown"
    (:class:`~starlingpy.dashboard.login.DashboardLogin`), every request
    then needs HTTP Basic authentication."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    # Listing holds the failure queue's items open while it looks: a drop or
    # retry in another request thread meanwhile would find nothing to act on.
    failure_queue = threading.Lock()

    if login is not None:
        @app.before_request
        def authenticate():
            given = request.authorization
            verdict = (login(given.username or "", given.password or "")
                       if given is not None and given.type == "basic" else "unknown")
            if verdict == "ok":
                return None
            if verdict == "forbidden":
                return jsonify({"error": "the dashboard is for users with the admin right"}), 403
            return (jsonify({"error": "log in with a user of the server's auth file"}), 401,
                    {"WWW-Authenticate": 'Basic realm="starlingpy dashboard", charset="UTF-8"'})

    @app.get("/")
    def page():
        return Response((HERE / "page.html").read_bytes(), content_type="text/html; charset=utf-8")

    @app.get("/static/<name>")
    def asset(name: str):
        if name not in ASSETS:
            return jsonify({"error": f"no such file: {name}"}), 404
        return Response((HERE / name).read_bytes(), content_type=ASSETS[name])

    @app.get("/api/queues")
    def queues():
        return jsonify(history.snapshot())

    @app.get("/api/workers")
    def workers():
        if processes is None:
            return jsonify({"supervised": False, "processes": []})
        report = processes()
        return jsonify({"supervised": True, "running": report["running"],
                        "processes": report["processes"]})

    @app.get("/api/failed")
    def failed():
        with failure_queue:
            items = list_failed(client, failed_queue, failed_limit)
        return jsonify({"queue": failed_queue, "limit": failed_limit,
                        "items": [_describe(item) for item in items]})

    @app.post("/api/failed/<action>")
    def act(action: str):
        if action not in ("retry", "drop"):
            return jsonify({"error": f"no such action: {action}"}), 404
        if not request.is_json:
            return jsonify({"error": "send application/json"}), 415
        ids = (request.get_json(silent=True) or {}).get("ids")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS \
                or not all(isinstance(i, str) for i in ids):
            return jsonify({"error": f"ids: a list of 1 to {MAX_IDS} message ids"}), 400
        with failure_queue:
            done = (retry_failed if action == "retry" else drop_failed)(client, failed_queue, ids,
                                                                        failed_limit)
        return jsonify({action: [item.id for item in done],
                        "missing": sorted(set(ids) - {item.id for item in done})})

    @app.get("/metrics")
    def metrics():
        if worker_metrics is None:
            return jsonify({"error": "worker metrics need the tier's config (-c)"}), 404
        return Response(worker_metrics(), content_type=CONTENT_TYPE_LATEST)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return jsonify({"error": error.description}), error.code

    @app.errorhandler(Exception)
    def bug(error: Exception):  # e.g. the queue server is down: say so, keep serving
        log.error("%s %s failed", request.method, request.path, exc_info=error)
        return jsonify({"error": f"{type(error).__name__}: {error}"}), 502

    @app.after_request
    def no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        return response

    return app


def _describe(item: FailedItem) -> dict:
    record = item.record
    if record is None:
        return {"id": None, "reason": "not a failure record", "raw": item.raw[:200].decode("latin-1")}
    message = record.message
    return {
        "id": record.id, "queue": record.queue, "reason": record.reason, "error": record.error,
        "traceback": record.traceback, "task": message.task if message else None,
        "attempt": message.attempt if message else None,
        "failed_at": datetime.datetime.fromtimestamp(record.failed_at, datetime.UTC).isoformat(),
    }
