"""Who may open the dashboard: the server's own users (its ``--auth-file``),
by HTTP Basic authentication, and only those with the ``admin`` right (the
dashboard shows every queue and can retry or drop failures).

A password is checked with scrypt once, then remembered (as a digest of
name and password, never the password) for a few minutes, so the page's
polling does not cost a hash per request. The file is reread when it
changes on disk, as the server rereads it on SIGHUP.

Basic authentication sends the password with every request: serve the
dashboard on 127.0.0.1 (its default) or behind TLS.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

from starlingpy.auth import AuthFile

REMEMBER_SECONDS = 300.0
MAX_REMEMBERED = 256


class DashboardLogin:
    """``check(name, password)``: "ok", "forbidden" (a user, not an admin) or
    "unknown" (no such user, or a wrong password). Thread-safe."""

    def __init__(self, path: Path) -> None:
        self._auth = AuthFile(path)
        self._mtime = self._stat()
        self._remembered: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def _stat(self) -> float:
        try:
            return self._auth.path.stat().st_mtime
        except OSError:
            return 0.0

    def check(self, name: str, password: str) -> str:
        key = hashlib.sha256(b"%s\0%s" % (name.encode(), password.encode())).digest()
        now = time.monotonic()
        with self._lock:
            mtime = self._stat()
            if mtime != self._mtime:  # changed on disk: users may have gone
                self._mtime = mtime
                self._auth.reload()
                self._remembered.clear()
            if self._remembered.get(key, 0.0) > now:
                return "ok"
        user = self._auth.verify_blocking(name, password.encode())
        if user is None:
            return "unknown"
        if not user.admin:
            return "forbidden"
        with self._lock:
            if len(self._remembered) >= MAX_REMEMBERED:
                self._remembered.clear()
            self._remembered[key] = now + REMEMBER_SECONDS
        return "ok"
