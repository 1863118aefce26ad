"""Helpers for the tests that run the background tier as an operator does:
the ``starlingpy`` command as a subprocess, a tier config file, the logs,
process liveness, and the reference application's web app.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from starlingpy.process.pidfile import pid_alive
from starlingpy.supervisor import load_tier, status_report
from tests.support import REPO


def starlingpy(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run ``python -m starlingpy ARGS`` from the repository; text output."""
    return subprocess.run([sys.executable, "-m", "starlingpy", *args], cwd=REPO, check=False,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))


def tier_status(config: Path) -> dict:
    """What ``status --json`` prints, computed in-process (cheap enough to poll)."""
    return status_report(load_tier(config))


def alive(pid: int | None) -> bool:
    """True if ``pid`` names a running process (a zombie has exited)."""
    return bool(pid) and pid_alive(pid)


def write_tier_config(directory: Path, *, supervisor: str = "", pools: str = "") -> Path:
    """``directory/tier.toml``: a server on a free port (queues in ``spool``,
    no fsync), run and log directories ``run`` and ``log``, then the given
    ``[supervisor]`` settings and pool tables (TOML lines)."""
    config = directory / "tier.toml"
    config.write_text(textwrap.dedent("""\
        [server]
        host = "127.0.0.1"
        port = 0
        queue_path = "spool"
        sync = "never"

        [supervisor]
        run_dir = "run"
        log_dir = "log"
        """) + textwrap.dedent(supervisor) + "\n" + textwrap.dedent(pools))
    return config


def graders_pool(database_url: str, instances: int) -> str:
    """The reference application's pool table: ``workers.tasks`` graders."""
    return textwrap.dedent(f"""\
        [pools.graders]
        module = "workers.tasks"
        queues = ["submissions", "regrades"]
        instances = {instances}
        directory = "{REPO}"
        env = {{ APP_DATABASE_URL = "{database_url}" }}
        """)


def logs(config: Path, tail: int = 4000) -> str:
    """The end of every log file of the tier, for assertion messages."""
    return "\n".join(f"--- {p.name}\n{p.read_text()[-tail:]}"
                     for p in sorted((config.parent / "log").glob("*.log")))


class WebApp:
    """``python -m client.web`` on a free port; its output drained in a thread."""

    def __init__(self, database_url: str, server: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "client.web", "--port", "0", "--database", database_url,
             "--server", server], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.output: list[str] = []
        found = threading.Event()
        self.url: str | None = None

        def drain() -> None:
            for line in self.proc.stdout:
                self.output.append(line)
                match = re.search(r"serving on (http://\S+?)/?$", line.strip())
                if match and self.url is None:
                    self.url = match.group(1)
                    found.set()
            found.set()
        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(60) or self.url is None:
            self.stop()
            raise RuntimeError("web app did not start:\n" + "".join(self.output))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
