"""The server's security set-up from its settings: the auth file and the TLS
listener, checked before anything is served, and the warning when the
server is reachable from other machines with nobody checking who talks."""

from __future__ import annotations

import ipaddress
import logging

from starlingpy.auth import AuthFile, AuthFileError
from starlingpy.tls import TlsConfigError, TlsFiles, TlsListener

log = logging.getLogger("starlingpy.security")


class SecurityConfigError(Exception):
    """The auth file or a TLS file is unusable; the message says which and why."""


def open_security(settings) -> tuple[AuthFile | None, TlsListener | None]:
    """(auth, tls) for a ServerConfig; either is None when not configured."""
    auth = tls = None
    try:
        if settings.auth_file:
            auth = AuthFile(settings.auth_file)
        if settings.tls_cert or settings.tls_key or settings.tls_ca:
            if not (settings.tls_cert and settings.tls_key):
                raise SecurityConfigError("TLS needs both --tls-cert and --tls-key")
            tls = TlsListener(TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_ca))
    except (AuthFileError, TlsConfigError) as error:
        raise SecurityConfigError(str(error)) from None
    if not is_loopback(settings.host):
        if auth is None:
            log.warning("listening on %s without --auth-file: anyone who can reach this port can read, "
                        "write, delete and list every queue%s", settings.host,
                        "" if tls else ", and all traffic crosses the network in clear text")
        elif tls is None:
            log.warning("listening on %s without TLS: passwords and items cross the network in clear "
                        "text (--tls-cert, --tls-key)", settings.host)
    return auth, tls


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it reaches beyond this machine
