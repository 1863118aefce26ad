"""Queue sizes for ``status``, read from the server's ``stats``."""

from __future__ import annotations

import socket


def parse_queue_items(stats: dict[str, str]) -> dict[str, int]:
    """``{queue: items}`` from ``stats`` lines.

    ``queue_<name>_items`` is ambiguous on its own (``queue_a_total_items``
    also ends in ``_items``), so a name counts only if its ``_logsize`` stat
    exists too: every queue reports both.
    """
    sizes = {}
    for key, value in stats.items():
        if key.startswith("queue_") and key.endswith("_items"):
            name = key[len("queue_"):-len("_items")]
            if f"queue_{name}_logsize" in stats and value.isdigit():
                sizes[name] = int(value)
    return sizes


def read_stats(address: str, timeout: float = 3.0) -> dict[str, str]:
    """One ``stats`` round trip over a plain socket: ``{name: value}``."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection during stats")
            data += chunk
            if len(data) > 16 << 20:
                raise ConnectionError("stats reply too large")
    stats = {}
    for line in data.decode(errors="replace").split("\r\n"):
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "STAT":
            stats[parts[1]] = parts[2]
    return stats


def queue_sizes(address: str) -> dict[str, int] | None:
    """Items per queue at ``address``, or None if the server does not answer."""
    try:
        return parse_queue_items(read_stats(address))
    except (OSError, ValueError):
        return None
