"""Client-side security: credentials and TLS settings, where they come from,
and logging in on a fresh connection.

Credentials never come from the command line (``ps`` shows it).  A
:class:`Credentials` is built by the caller, or read from the environment:

``STARLINGPY_CREDENTIALS``
    a TOML file (keep it mode 0600) with any of ``username``, ``password``,
    ``tls_ca`` (verify the server against this CA, which turns TLS on),
    ``tls_cert`` and ``tls_key`` (a client certificate for mutual TLS),
    ``tls = true`` (TLS with the system's CAs); relative paths resolve
    against the file's folder.
``STARLINGPY_USERNAME``, ``STARLINGPY_PASSWORD``, ``STARLINGPY_TLS_CA``, ``STARLINGPY_TLS_CERT``, ``STARLINGPY_TLS_KEY``
    the same settings one by one; they win over the file.

Logging in (memcached's text-protocol authentication): a new connection
first sends ``version``.  Only when the server answers
``CLIENT_ERROR unauthenticated`` are the credentials sent, as a ``set``
whose data is ``user password``, so a server without authentication never
receives (and never stores) a password.
"""

from __future__ import annotations

import os
import socket
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ServerError

LOGIN_KEY = b"auth"
_MAX_LINE = 4096


class AuthenticationFailed(ServerError):
    """The server refused the credentials (or wanted some and got none)."""


class CredentialsError(ValueError):
    """The credentials file or variables are unusable; names which and why."""


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None

    @property
    def can_log_in(self) -> bool:
        return bool(self.username) and self.password is not None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Credentials:
        settings: dict = {}
        base = Path.cwd()
        file = environ.get("STARLINGPY_CREDENTIALS")
        if file:
            path = Path(file)
            try:
                settings = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError) as error:
                raise CredentialsError(f"credentials file {path}: {error}") from None
            unknown = set(settings) - {"username", "password", "tls", "tls_ca", "tls_cert", "tls_key"}
            if unknown:
                raise CredentialsError(f"credentials file {path}: unknown key {sorted(unknown)[0]!r}")
            base = path.resolve().parent
        for key in ("username", "password", "tls_ca", "tls_cert", "tls_key"):
            value = environ.get(f"STARLINGPY_{key.upper()}")
            if value:
                settings[key] = value
        paths = {key: base / settings[key] for key in ("tls_ca", "tls_cert", "tls_key") if settings.get(key)}
        tls = None
        if paths or settings.get("tls"):
            tls = client_tls_context(paths.get("tls_ca"), paths.get("tls_cert"), paths.get("tls_key"))
        return cls(settings.get("username"), settings.get("password"), tls)


def client_tls_context(ca: Path | None = None, cert: Path | None = None,
                       key: Path | None = None) -> ssl.SSLContext:
    """A client context verifying the server (against ``ca`` or the system's
    CAs), presenting ``cert``/``key`` when given."""
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        if cert:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise CredentialsError(f"TLS files ({ca or ''} {cert or ''} {key or ''}): {error}") from None
    return context


def log_in(sock: socket.socket, credentials: Credentials | None) -> bytes:
    """On a fresh connection: the server's ``version`` text, logging in first
    if the server asks for it.  Raises AuthenticationFailed, ServerError,
    ConnectionError (the stream is then out of step: close it)."""
    line = _call(sock, b"version\r\n")
    if line == b"CLIENT_ERROR unauthenticated":
        if credentials is None or not credentials.can_log_in:
            raise AuthenticationFailed("the server requires authentication and no credentials were given")
        data = f"{credentials.username} {credentials.password}".encode()
        reply = _call(sock, b"set %s 0 0 %d\r\n%s\r\n" % (LOGIN_KEY, len(data), data))
        if reply != b"STORED":
            raise AuthenticationFailed(f"login as {credentials.username!r} refused: "
                                       f"{reply.decode('utf-8', 'replace')}")
        line = _call(sock, b"version\r\n")
    if not line.startswith(b"VERSION "):
        raise ServerError(line.decode("utf-8", "replace"))
    return line[len(b"VERSION "):]


def connect(address: tuple[str, int], timeout: float, credentials: Credentials | None) -> socket.socket:
    """A blocking socket to ``address``, TLS if configured.  With
    ``credentials`` (even empty ones) the server has answered ``version``
    and the connection is logged in if it asked; with None nothing is sent."""
    sock = socket.create_connection(address, timeout=timeout)
    try:
        if credentials is not None and credentials.tls is not None:
            sock = credentials.tls.wrap_socket(sock, server_hostname=address[0])
        if credentials is not None:
            log_in(sock, credentials)
    except BaseException:
        sock.close()
        raise
    return sock


def _call(sock: socket.socket, request: bytes) -> bytes:
    """Send ``request``, read one reply line (short replies only)."""
    sock.sendall(request)
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(1)  # byte by byte: nothing after the line is consumed
        if not chunk:
            raise ConnectionError("the server closed the connection")
        line += chunk
        if len(line) > _MAX_LINE:
            raise ConnectionError("reply line too long")
    return line[:-2]
