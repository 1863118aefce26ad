"""Who may do what: the auth file, password hashes, and the per-connection
gate that answers a command before the session runs it.

The auth file (``--auth-file``) holds one user per line; ``#`` starts a
comment line, blank lines are ignored::

    # user   password hash (made by `starlingpy passwd`)     grants
    web      scrypt$16384$8$1$<salt>$<hash>                  set=grading*
    grader   scrypt$16384$8$1$<salt>$<hash>                  get=grading* set=results*
    ops      scrypt$16384$8$1$<salt>$<hash>                  get,set=* admin
    worker1  -                                               get=grading*

A grant is ``RIGHTS=PATTERNS``: rights ``set`` and/or ``get`` (``get``
covers ``/open``, ``/close``, ``/abort`` and ``/peek``) on the queues whose
names match one of the comma-separated patterns, where ``*`` matches any run
of bytes and every other byte stands for itself.  ``admin`` allows
``delete``, ``flush``, ``flush_all``, ``shutdown`` and seeing every queue in
``stats``; without it ``stats`` lists only the queues a user's patterns
match.  A hash of ``-`` means no password login: the user can only be
authenticated by a client certificate whose common name is the user's name
(mutual TLS, see :mod:`starlingpy.tls`).

Hashes are salted scrypt (hashlib), ``scrypt$N$r$p$salt$hash`` with salt and
hash in base64.  N=16384, r=8, p=1 costs about 16 MiB and some tens of
milliseconds per check: slow for someone guessing, fast enough for a
connection that logs in once.  The check runs in a worker thread (at most
two at once) so it never stalls the event loop or the other clients.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

from starlingpy.protocol import commands as c

log = logging.getLogger("starlingpy.auth")

UNAUTHENTICATED = b"CLIENT_ERROR unauthenticated\r\n"
AUTH_FAILED = b"CLIENT_ERROR authentication failure\r\n"
PERMISSION_DENIED = b"CLIENT_ERROR permission denied\r\n"
STORED = b"STORED\r\n"

MAX_FAILURES = 5  # failed logins on one connection before it is closed
MAX_CREDENTIALS = 1024  # longer `user password` data is refused without hashing
SCRYPT_N, SCRYPT_R, SCRYPT_P = 16384, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
# Bounds on parameters read from a file, so a typo cannot ask for gigabytes.
_MAX_N, _MAX_R, _MAX_P = 1 << 20, 32, 16
_MAXMEM = 256 * 1024 * 1024
NO_PASSWORD = "-"
RIGHTS = ("set", "get")
_USER_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}\Z")
_MAX_CACHE = 4096  # remembered rights decisions per user


class AuthFileError(Exception):
    """The auth file is unreadable or malformed; the message names file and line."""


# -- password hashes --------------------------------------------------------


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """A new salted scrypt hash of ``password`` in the auth file's notation."""
    salt = os.urandom(SALT_BYTES)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM,
                            dklen=HASH_BYTES)
    return "$".join(("scrypt", str(n), str(r), str(p), _b64(salt), _b64(digest)))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class PasswordHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Raises ValueError naming what is wrong."""
        parts = text.split("$")
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError("password hash must be scrypt$N$r$p$salt$hash (use `starlingpy passwd`)")
        try:
            n, r, p = (int(x) for x in parts[1:4])
            salt = base64.b64decode(parts[4], validate=True)
            digest = base64.b64decode(parts[5], validate=True)
        except ValueError:
            raise ValueError("password hash has a bad number or base64 field") from None
        if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P):
            raise ValueError(f"scrypt parameters out of range (N a power of 2 up to {_MAX_N}, "
                             f"r up to {_MAX_R}, p up to {_MAX_P})")
        if len(salt) < 8 or len(digest) < 16:
            raise ValueError("password hash salt or digest too short")
        return cls(n, r, p, salt, digest)

    def matches(self, password: bytes) -> bool:
        """Constant-time comparison of the stored digest with ``password``'s."""
        candidate = hashlib.scrypt(password, salt=self.salt, n=self.n, r=self.r, p=self.p,
                                   maxmem=_MAXMEM, dklen=len(self.digest))
        return hmac.compare_digest(candidate, self.digest)


# A hash checked for unknown users, so that a wrong name costs the same time
# as a wrong password and names cannot be probed by timing.
_DECOY = PasswordHash(SCRYPT_N, SCRYPT_R, SCRYPT_P, b"\0" * SALT_BYTES, b"\0" * HASH_BYTES)


# -- users and rights -------------------------------------------------------


def compile_pattern(pattern: str) -> re.Pattern[bytes]:
    """``*`` matches any run of bytes; every other byte is literal."""
    pieces = (re.escape(part.encode()) for part in pattern.split("*"))
    return re.compile(b".*".join(pieces) + rb"\Z", re.DOTALL)


@dataclass(eq=False)
class User:
    name: str
    password: PasswordHash | None  # None: only a client certificate logs in
    grants: Mapping[str, tuple[re.Pattern[bytes], ...]]  # right -> patterns
    admin: bool = False
    _decisions: dict = field(default_factory=dict, repr=False)

    def may(self, right: str, queue: bytes) -> bool:
        """``right`` (``set``/``get``) on ``queue``; remembered per name."""
        key = (right, queue)
        allowed = self._decisions.get(key)
        if allowed is None:
            allowed = any(p.match(queue) for p in self.grants.get(right, ()))
            if len(self._decisions) >= _MAX_CACHE:
                self._decisions.clear()
            self._decisions[key] = allowed
        return allowed

    def may_see(self, queue: bytes) -> bool:
        return self.admin or any(self.may(right, queue) for right in RIGHTS)


def parse_auth_file(text: str, path: Path | str = "auth file") -> dict[str, User]:
    """Users by name; raises AuthFileError naming ``path`` and the line."""
    users: dict[str, User] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            user = _parse_user(fields)
        except ValueError as error:
            raise AuthFileError(f"{path}:{number}: {error}") from None
        if user.name in users:
            raise AuthFileError(f"{path}:{number}: user {user.name!r} listed twice")
        users[user.name] = user
    return users


def _parse_user(fields: list[str]) -> User:
    if len(fields) < 2:
        raise ValueError("expected: USER HASH [GRANT...]")
    name, hashed, *grant_texts = fields
    if not _USER_NAME.match(name):
        raise ValueError(f"bad user name {name!r} (letters, digits, _ . @ -; up to 64)")
    password = None if hashed == NO_PASSWORD else PasswordHash.parse(hashed)
    grants: dict[str, list[re.Pattern[bytes]]] = {}
    admin = False
    for text in grant_texts:
        if text == "admin":
            admin = True
            continue
        rights, sep, patterns = text.partition("=")
        if not sep or not patterns:
            raise ValueError(f"bad grant {text!r}: expected RIGHTS=PATTERNS (e.g. get,set=jobs*) or admin")
        for right in rights.split(","):
            if right not in RIGHTS:
                raise ValueError(f"unknown right {right!r} in {text!r} (set, get; admin stands alone)")
            grants.setdefault(right, []).extend(compile_pattern(p) for p in patterns.split(",") if p)
    return User(name, password, {right: tuple(ps) for right, ps in grants.items()}, admin)


def read_auth_file(path: Path) -> dict[str, User]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise AuthFileError(f"cannot read auth file {path}: {error}") from None
    return parse_auth_file(text, path)


class AuthFile:
    """The users in force: read at start, reread on :meth:`reload`.

    A file that fails to parse on reload is refused (logged with its line)
    and the users read before stay in force.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.users = read_auth_file(self.path)
        self._limiter: trio.CapacityLimiter | None = None

    def reload(self) -> bool:
        try:
            users = read_auth_file(self.path)
        except AuthFileError as error:
            log.error("auth file not reloaded, the previous one stays in force: %s", error)
            return False
        self.users = users
        log.info("auth file %s reloaded: %d users", self.path, len(users))
        return True

    def gate(self, peer: str) -> Gate:
        return Gate(self, peer)

    async def verify(self, name: str, password: bytes) -> User | None:
        """The user if ``password`` is theirs; hashed in a worker thread."""
        if self._limiter is None:
            # At most two hashes at once: logins queue, other clients don't.
            self._limiter = trio.CapacityLimiter(2)
        return await trio.to_thread.run_sync(self.verify_blocking, name, password,
                                             limiter=self._limiter)

    def verify_blocking(self, name: str, password: bytes) -> User | None:
        """:meth:`verify` in the caller's thread (for threaded servers: the dashboard)."""
        user = self.users.get(name)
        stored = user.password if user is not None else None
        ok = (stored or _DECOY).matches(password)
        return user if ok and stored is not None else None


# -- the per-connection gate ------------------------------------------------


def peer_name(sock) -> str:
    """``host:port`` of the other end, for the log; never raises."""
    try:
        host, port = sock.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "(disconnected peer)"


_ADMIN_ONLY = (c.Delete, c.Flush, c.FlushAll, c.Shutdown)


class Gate:
    """One connection's login state and rights checks.

    :meth:`check` runs before the session executes a command: ``None`` lets
    it through, bytes are the refusal, and a :class:`Login` is the pending
    password check the connection awaits (``await login.finish(session)``).
    """

    def __init__(self, auth: AuthFile, peer: str) -> None:
        self.auth = auth
        self.peer = peer
        self.user_name: str | None = None
        self.failures = 0

    @property
    def user(self) -> User | None:
        """The logged-in user as the file in force has it (None once removed)."""
        return None if self.user_name is None else self.auth.users.get(self.user_name)

    def login_by_certificate(self, common_name: str | None) -> bool:
        """A verified client certificate naming a user logs that user in."""
        if common_name and common_name in self.auth.users:
            self.user_name = common_name
            log.info("%s authenticated as %s by its certificate", self.peer, common_name)
            return True
        return False

    def check(self, command: c.Command) -> bytes | Login | None:
        if self.user_name is None:
            if command.__class__ is c.Set:
                return Login(self, command)
            return UNAUTHENTICATED
        user = self.user
        if user is None:
            return PERMISSION_DENIED
        cls = command.__class__
        if cls is c.Set:
            if user.may("set", command.queue):
                return None
            return b"" if command.noreply else PERMISSION_DENIED
        if cls is c.Get:
            for key in command.keys:
                for name in key.queues:
                    if not user.may("get", name):
                        return PERMISSION_DENIED
            return None
        if cls in _ADMIN_ONLY and not user.admin:
            return b"" if getattr(command, "noreply", False) else PERMISSION_DENIED
        return None

    def visible(self, queue_stats: dict) -> dict:
        """The part of a ``stats`` snapshot this connection may see."""
        user = self.user
        if user is None:
            return {}
        if user.admin:
            return queue_stats
        return {name: stats for name, stats in queue_stats.items() if user.may_see(name)}


class Login:
    """A ``set`` whose data is ``user password``, awaiting its hash check."""

    def __init__(self, gate: Gate, command: c.Set) -> None:
        self.gate = gate
        self.command = command

    async def finish(self, session) -> bytes:
        gate = self.gate
        name, _, password = self.command.data.partition(b" ")
        user = None
        if len(self.command.data) <= MAX_CREDENTIALS and name and password:
            user = await gate.auth.verify(name.decode("utf-8", "replace"), password)
        if user is not None:
            gate.user_name = user.name
            gate.failures = 0
            log.info("%s authenticated as %s", gate.peer, user.name)
            return b"" if self.command.noreply else STORED
        gate.failures += 1
        log.warning("%s: authentication failure %d of %d (user %r)", gate.peer, gate.failures,
                    MAX_FAILURES, name[:64].decode("utf-8", "replace"))
        if gate.failures >= MAX_FAILURES:
            log.warning("%s: closing the connection after %d authentication failures",
                        gate.peer, gate.failures)
            session.quit = True
        return b"" if self.command.noreply and not session.quit else AUTH_FAILED
