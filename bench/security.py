"""What authentication and TLS cost: server CPU per set and per get on one
request/reply connection, for a plain server, one with ``--auth-file`` and
one with TLS, side by side in the same run (report only, no target).

The three servers run at once and the load alternates between them in
rounds, so other work on the machine weighs on all three alike.  The
client logs in once per connection, as real clients do; the TLS
certificate is made with the ``openssl`` command into the spool folder.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
from pathlib import Path

from bench import procstat
from bench.peers import StarlingpyServer
from starlingpy.auth import hash_password
from starlingpy.client.security import Credentials, connect

VALUE = b"0123456789" * 10
ROUNDS = 4
KINDS = ("plain", "auth", "tls")
USER, PASSWORD = "bench", "bench-password"


def _certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "server.pem", directory / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=bench",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def _round_trips(sock: socket.socket, request: bytes, terminator: bytes, count: int) -> None:
    buffer = bytearray()
    for _ in range(count):
        sock.sendall(request)
        while (end := buffer.find(terminator)) < 0:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buffer += chunk
        del buffer[:end + len(terminator)]


def measure_security(spool: Path, ops: int, command: tuple[str, ...]) -> dict:
    """``{kind: {"set": µs CPU per op, "get": ...}}`` for plain, auth and tls."""
    spool.mkdir(parents=True, exist_ok=True)
    auth_file = spool / "users.auth"
    auth_file.write_text(f"{USER} {hash_password(PASSWORD)} get,set=*\n")
    cert, key = _certificate(spool)
    options = {"plain": (), "auth": ("--auth-file", str(auth_file)),
               "tls": ("--tls-cert", str(cert), "--tls-key", str(key))}
    credentials = {"plain": None, "auth": Credentials(USER, PASSWORD),
                   "tls": Credentials(tls=ssl.create_default_context(cafile=str(cert)))}
    cpu = {kind: {"set": 0.0, "get": 0.0} for kind in KINDS}
    per_round = max(1, ops // ROUNDS)
    with contextlib.ExitStack() as stack:
        servers = {kind: stack.enter_context(StarlingpyServer(spool / f"queues-{kind}", *options[kind],
                                                               command=command))
                   for kind in KINDS}
        socks = {kind: stack.enter_context(connect(servers[kind].address, 30.0, credentials[kind]))
                 for kind in KINDS}
        for _ in range(ROUNDS):
            for kind in KINDS:
                for op, request, terminator in (("set", b"set bench 0 0 %d\r\n%s\r\n" % (len(VALUE), VALUE),
                                                 b"STORED\r\n"),
                                                ("get", b"get bench\r\n", b"END\r\n")):
                    before = procstat.cpu_seconds(servers[kind].pid)
                    _round_trips(socks[kind], request, terminator, per_round)
                    cpu[kind][op] += procstat.cpu_seconds(servers[kind].pid) - before
    done = per_round * ROUNDS
    return {kind: {op: seconds / done * 1e6 for op, seconds in ops_cpu.items()} | {"ops": done}
            for kind, ops_cpu in cpu.items()}


def format_lines(security: dict | None) -> list[str]:
    if not security:
        return ["security: not measured"]
    plain = security["plain"]
    lines = [f"{'security (1 connection, request/reply)':<40} {'set CPU µs/op':>14} {'get CPU µs/op':>14}",
             "-" * 70]
    for kind, label in (("plain", "plain TCP"), ("auth", "--auth-file (logged in once)"), ("tls", "TLS")):
        row = security[kind]
        cells = []
        for op in ("set", "get"):
            extra = "" if kind == "plain" or not plain[op] else f" ({row[op] / plain[op] - 1:+.0%})"
            cells.append(f"{row[op]:.1f}{extra}")
        lines.append(f"{label:<40} {cells[0]:>14} {cells[1]:>14}")
    lines.append(f"({security['plain']['ops']:,} sets and gets per server, alternating between the servers)")
    return lines
