"""Serve a WSGI application with waitress (the reference web tier and the
dashboard): a production server, pure Python, with a thread pool, which
can be stopped from another thread (tests and ``Ctrl-C``)."""

from __future__ import annotations

import threading

import waitress
from waitress import wasyncore


class WebServer:
    """``app`` on host:port (0 picks a free one); :meth:`run` blocks until
    :meth:`stop` (from any thread) or ``KeyboardInterrupt``. As a context
    manager it serves from a background thread (tests, the dashboard's
    embedding)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, *, threads: int = 8) -> None:
        # Our own socket map: stop() empties it, which ends waitress's loop.
        self._map: dict = {}
        self._server = waitress.create_server(app, map=self._map, host=host, port=port,
                                              threads=threads, ident="starlingpy")
        self.host = host
        self.port = self._server.effective_port
        self.url = f"http://{host}:{self.port}"

    def run(self) -> None:
        try:
            self._server.run()
        finally:
            self._server.task_dispatcher.shutdown()

    def stop(self) -> None:
        # Sockets are closed by the loop's own thread (through waitress's
        # trigger), never under its select; an empty map ends run().
        self._server.trigger.pull_trigger(lambda: wasyncore.close_all(self._map))

    def __enter__(self) -> WebServer:
        self._thread = threading.Thread(target=self.run, name=f"web {self.url}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self._thread.join(10)
