"""The reference application on one machine, in one command:

    python -m workers.demo [--port 8080] [--dashboard-port 8081]

Starts the tier (``starlingpy up -c workers/starlingpy.toml``: the server on
127.0.0.1:22122 and four graders), then the web app and, beside it, the
operator's dashboard (``starlingpy dashboard``), prints both addresses, and
on Ctrl-C stops them and the tier. Data goes to ``var/``.

Authentication is on: the first run makes ``var/auth`` (password hashes and
rights) and one credentials file per user (mode 0600) with random
passwords: ``grader`` takes and re-queues work, ``web`` may only enqueue,
``operator`` (admin) logs into the dashboard and reads every queue.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

CONFIG = Path(__file__).with_name("starlingpy.toml")
REPO = CONFIG.parent.parent
VAR = REPO / "var"
AUTH_FILE = VAR / "auth"  # as workers/starlingpy.toml says
# user -> grants; the graders' user also backs `starlingpy status`.
USERS = {
    "grader": ["get,set=submissions,regrades,grader_failed"],
    "web": ["set=submissions,regrades"],
    "operator": ["admin"],  # the dashboard: every queue, the failure queue, its login
}


def ensure_credentials() -> dict[str, Path]:
    """The auth file and each user's credentials file, made once."""
    VAR.mkdir(parents=True, exist_ok=True)
    files = {}
    for user, grants in USERS.items():
        credentials = files[user] = VAR / f"{user}-credentials.toml"
        if credentials.exists() and AUTH_FILE.exists():
            continue
        password = secrets.token_urlsafe(24)
        subprocess.run([sys.executable, "-m", "starlingpy", "passwd", str(AUTH_FILE), user, "--stdin",
                        *(f"--grant={grant}" for grant in grants)],
                       input=password + "\n", text=True, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        fd = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f'username = "{user}"\npassword = "{password}"\n')
    return files


def starlingpy(*args: str) -> int:
    return subprocess.call([sys.executable, "-m", "starlingpy", *args, "-c", str(CONFIG)],
                           cwd=REPO)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="the page's port (default 8080)")
    parser.add_argument("--dashboard-port", type=int, default=8081,
                        help="the dashboard's port (default 8081)")
    args = parser.parse_args(argv)
    # SIGTERM (a service manager, `timeout`, `kill`) stops the tier like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    credentials = ensure_credentials()
    if starlingpy("up") != 0:
        return 1
    starlingpy("status")
    # It prints "dashboard on http://127.0.0.1:PORT/" once it accepts.
    # Its page asks for a login: operator, with the password in var/operator-credentials.toml.
    dashboard = subprocess.Popen([sys.executable, "-m", "starlingpy", "dashboard", "-c", str(CONFIG),
                                  "--port", str(args.dashboard_port),
                                  "--failed-queue", "grader_failed"], cwd=REPO,
                                 env=dict(os.environ, STARLINGPY_CREDENTIALS=str(credentials["operator"])))
    print(f"dashboard login: operator, password in {credentials['operator']}", flush=True)
    try:
        # The web app prints "serving on http://127.0.0.1:PORT/" once it accepts.
        return subprocess.call([sys.executable, "-m", "client.web", "--port", str(args.port)],
                               cwd=REPO, env=dict(os.environ, STARLINGPY_CREDENTIALS=str(credentials["web"])))
    except KeyboardInterrupt:
        return 0
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
        starlingpy("down")


if __name__ == "__main__":
    sys.exit(main())
