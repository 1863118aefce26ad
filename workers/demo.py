"""The reference application on one machine, in one command:

    python -m workers.demo [--port 8080]

Starts the tier (``starlingpy up -c workers/starlingpy.toml``: the server on
127.0.0.1:22122 and four graders), then the web app, prints the page's
address, and on Ctrl-C stops the web app and the tier. Data goes to ``var/``.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path

CONFIG = Path(__file__).with_name("starlingpy.toml")
REPO = CONFIG.parent.parent


def starlingpy(*args: str) -> int:
    return subprocess.call([sys.executable, "-m", "starlingpy", *args, "-c", str(CONFIG)],
                           cwd=REPO)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="the page's port (default 8080)")
    args = parser.parse_args(argv)
    # SIGTERM (a service manager, `timeout`, `kill`) stops the tier like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if starlingpy("up") != 0:
        return 1
    starlingpy("status")
    try:
        # The web app prints "serving on http://127.0.0.1:PORT/" once it accepts.
        return subprocess.call([sys.executable, "-m", "client.web", "--port", str(args.port)],
                               cwd=REPO)
    except KeyboardInterrupt:
        return 0
    finally:
        starlingpy("down")


if __name__ == "__main__":
    sys.exit(main())
