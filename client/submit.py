"""Submit a program from a script, through the web app's HTTP API.

    python -m client.submit --url http://127.0.0.1:8080 --problem hello prog.py
    python -m client.submit --problem sum --language c --wait sum.c

With ``--wait`` it polls until the verdict and exits 0 only if accepted.
The functions ``submit`` and ``wait_for_verdict`` are the same thing for
Python code (the end-to-end tests use them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8080"


class SubmitError(Exception):
    """The web app refused the submission (the message is its reason)."""


def _request(url: str, body: dict | None = None, timeout: float = 10.0) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as error:
        try:
            reason = json.loads(error.read()).get("error", error.reason)
        except ValueError:
            reason = error.reason
        raise SubmitError(f"{error.code}: {reason}") from None


def submit(base_url: str, problem: str, source: str, language: str = "python") -> int:
    """POST one submission; returns its id."""
    reply = _request(f"{base_url.rstrip('/')}/api/submissions",
                     {"problem": problem, "language": language, "source": source})
    return int(reply["id"])


def fetch(base_url: str, submission_id: int) -> dict:
    """The submission as the API shows it."""
    return _request(f"{base_url.rstrip('/')}/api/submissions/{submission_id}")


def wait_for_verdict(base_url: str, submission_id: int, timeout: float = 60.0,
                     interval: float = 0.2) -> dict:
    """Poll until the submission is ``done``; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        state = fetch(base_url, submission_id)
        if state["status"] == "done":
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"submission {submission_id} still {state['status']} "
                               f"after {timeout} s")
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m client.submit", description=__doc__.splitlines()[0])
    parser.add_argument("file", help="the program's source file ('-' for stdin)")
    parser.add_argument("--problem", required=True, help="problem slug, e.g. hello")
    parser.add_argument("--language", choices=("python", "c"),
                        help="default: from the file name (.c is C, anything else Python)")
    parser.add_argument("--url", default=DEFAULT_URL, help="the web app (default %(default)s)")
    parser.add_argument("--wait", action="store_true", help="wait for the verdict")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    source = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    language = args.language or ("c" if args.file.endswith(".c") else "python")
    try:
        submission_id = submit(args.url, args.problem, source, language)
        print(f"submission {submission_id}: pending", flush=True)
        if not args.wait:
            return 0
        state = wait_for_verdict(args.url, submission_id, timeout=args.timeout)
    except (SubmitError, OSError, TimeoutError) as error:
        print(f"submit: {error}", file=sys.stderr)
        return 2
    print(f"submission {submission_id}: {state['verdict']}"
          + (f" ({state['detail'].splitlines()[0]})" if state["detail"] else ""))
    return 0 if state["verdict"] == "accepted" else 1


if __name__ == "__main__":
    sys.exit(main())
