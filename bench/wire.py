"""Request bytes and reply scanning for the two wires under test.

Both scanners are incremental over a ``bytearray``: ``scan(buf, pos)`` returns
``(next_pos, kind)`` for one complete reply starting at ``pos``, or ``None``
when the reply is not complete yet. They are written for speed, not for
validation: the load generator runs them once per operation in the same
process that has to keep up with the server.
"""

from __future__ import annotations

# What a reply meant, counted by the load generator.
STORED = 0   # set / RPUSH acknowledged
HIT = 1      # get / LPOP returned an item
MISS = 2     # get / LPOP found the queue empty
ERROR = 3    # anything else (NOT_STORED, SERVER_ERROR, -ERR ...)
KIND_NAMES = ("stored", "hit", "miss", "error")

_CRLF = b"\r\n"


class MemcacheWire:
    """The memcache text protocol as starlingpy speaks it (set / get)."""

    name = "memcache"

    @staticmethod
    def set_request(queue: bytes, value: bytes) -> bytes:
        return b"set %s 0 0 %d\r\n%s\r\n" % (queue, len(value), value)

    @staticmethod
    def get_request(queue: bytes) -> bytes:
        return b"get %s\r\n" % queue

    @staticmethod
    def scan(buf: bytearray, pos: int) -> tuple[int, int] | None:
        eol = buf.find(_CRLF, pos)
        if eol < 0:
            return None
        first = buf[pos]
        if first == 0x53 and eol - pos == 6:  # "STORED"
            return eol + 2, STORED
        if first == 0x45 and eol - pos == 3:  # "END": an empty queue
            return eol + 2, MISS
        if first == 0x56:  # "VALUE <key> <flags> <bytes>", data, "END"
            size = int(buf[pos:eol].split()[3])
            end = eol + 2 + size + 2 + 5
            if len(buf) < end:
                return None
            if buf[end - 5:end] != b"END\r\n":
                raise ValueError(f"malformed get reply: {bytes(buf[pos:end])!r}")
            return end, HIT
        return eol + 2, ERROR


class RespWire:
    """Redis's RESP2: RPUSH to enqueue, LPOP to dequeue."""

    name = "resp"

    @staticmethod
    def command(*args: bytes) -> bytes:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        return b"".join(parts)

    @classmethod
    def set_request(cls, queue: bytes, value: bytes) -> bytes:
        return cls.command(b"RPUSH", queue, value)

    @classmethod
    def get_request(cls, queue: bytes) -> bytes:
        return cls.command(b"LPOP", queue)

    @staticmethod
    def scan(buf: bytearray, pos: int) -> tuple[int, int] | None:
        eol = buf.find(_CRLF, pos)
        if eol < 0:
            return None
        first = buf[pos]
        if first == 0x3A or first == 0x2B:  # ":<n>" from RPUSH, "+OK"
            return eol + 2, STORED
        if first == 0x24:  # "$<n>" bulk string, "$-1" nil
            size = int(buf[pos + 1:eol])
            if size < 0:
                return eol + 2, MISS
            end = eol + 2 + size + 2
            if len(buf) < end:
                return None
            return end, HIT
        return eol + 2, ERROR
