"""The dashboard behind the server's own users: HTTP Basic against the auth
file, admins only, over a real socket (waitress), with a real scrypt hash."""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.request

import pytest

from starlingpy.auth import hash_password
from starlingpy.dashboard.app import create_app
from starlingpy.dashboard.history import QueueHistory
from starlingpy.dashboard.login import DashboardLogin
from starlingpy.webserver import WebServer

# Cheap scrypt parameters: the test checks the rules, not the cost.
OPERATOR = hash_password("op-secret", n=1024)
WEB = hash_password("web-secret", n=1024)


def status(url: str, user: str | None = None, password: str = "") -> int:
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        if error.code == 401:
            assert error.headers["WWW-Authenticate"].startswith("Basic ")
        return error.code


@pytest.fixture
def dashboard(tmp_path):
    auth_file = tmp_path / "auth"
    auth_file.write_text(f"operator {OPERATOR} admin\nweb {WEB} set=grading*\n")
    login = DashboardLogin(auth_file)
    app = create_app(QueueHistory(5.0), client=None, login=login.check)
    with WebServer(app) as server:
        yield server.url, auth_file


def test_only_admins_of_the_auth_file_get_in(dashboard):
    url, _ = dashboard
    assert status(url + "/api/queues") == 401
    assert status(url + "/api/queues", "operator", "wrong") == 401
    assert status(url + "/api/queues", "nobody", "op-secret") == 401
    assert status(url + "/api/queues", "web", "web-secret") == 403  # a user, not an admin
    assert status(url + "/api/queues", "operator", "op-secret") == 200
    assert status(url + "/", "operator", "op-secret") == 200
    assert status(url + "/api/queues", "operator", "op-secret") == 200  # (remembered: no rehash)


def test_a_changed_auth_file_takes_effect(dashboard):
    url, auth_file = dashboard
    assert status(url + "/api/queues", "operator", "op-secret") == 200
    auth_file.write_text(f"web {WEB} set=grading*\n")  # the operator was removed
    os.utime(auth_file, (1, 1))  # a different mtime, whatever the clock's resolution
    assert status(url + "/api/queues", "operator", "op-secret") == 401
