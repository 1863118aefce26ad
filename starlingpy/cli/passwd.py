"""`starlingpy passwd FILE USER`: add a user to an auth file or change its
password, writing only a salted hash.

    starlingpy passwd etc/auth web --grant set=grading*
    printf '%s\\n' "$PASSWORD" | starlingpy passwd etc/auth web --stdin

The password is prompted for (twice) or read from the first line of stdin
with ``--stdin``; never from the command line, where ``ps`` would show it.
An existing user keeps its grants unless ``--grant`` is given.  The file is
rewritten atomically, mode 0600, other lines and comments untouched.
"""

from __future__ import annotations

import getpass
import os
import sys
import tempfile
from pathlib import Path

from starlingpy.auth import AuthFileError, hash_password, parse_auth_file


def register(subparsers) -> None:
    p = subparsers.add_parser("passwd", help="add a user to an auth file or change its password",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="the auth file (created if missing)")
    p.add_argument("user", help="user name")
    p.add_argument("--stdin", action="store_true", help="read the password from stdin's first line")
    p.add_argument("--grant", action="append", default=[], metavar="RIGHTS=PATTERNS",
                   help="what the user may do, e.g. set=grading* or get,set=* or admin (repeatable)")
    p.set_defaults(func=run)


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def updated_text(text: str, user: str, hashed: str, grants: list[str]) -> str:
    """``text`` with ``user``'s line replaced (or appended)."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        fields = line.split()
        if fields and fields[0] == user:
            kept = grants or fields[2:]
            lines[index] = " ".join([user, hashed, *kept])
            break
    else:
        lines.append(" ".join([user, hashed, *grants]))
    return "\n".join(lines) + "\n"


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a file only its owner can read."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def run(args) -> int:
    path = Path(args.file)
    try:
        text = path.read_text() if path.exists() else ""
        parse_auth_file(text, path)  # refuse to build on a broken file
        password = read_password(args.stdin)
        if not password:
            raise ValueError("empty password")
        new_text = updated_text(text, args.user, hash_password(password), args.grant)
        parse_auth_file(new_text, path)  # a bad user name or grant is refused, not written
        write_private(path, new_text)
    except (AuthFileError, ValueError, OSError) as error:
        print(f"starlingpy passwd: {error}", file=sys.stderr)
        return 2
    except (EOFError, KeyboardInterrupt):
        print("starlingpy passwd: no password given", file=sys.stderr)
        return 2
    print(f"{path}: password for {args.user} set")
    return 0
