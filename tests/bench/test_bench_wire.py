"""The benchmark's reply scanners, fed whole and split at every offset."""

from __future__ import annotations

import pytest

from bench.wire import ERROR, HIT, MISS, STORED, MemcacheWire, RespWire

MEMCACHE_REPLIES = [
    (b"STORED\r\n", STORED),
    (b"END\r\n", MISS),
    (b"VALUE q 0 5\r\nab\r\nc\r\nEND\r\n", HIT),  # data holding CRLF
    (b"VALUE q/t=10 7 0\r\n\r\nEND\r\n", HIT),
    (b"NOT_STORED\r\n", ERROR),
    (b"SERVER_ERROR object too large for cache\r\n", ERROR),
]
RESP_REPLIES = [
    (b":12\r\n", STORED),
    (b"+OK\r\n", STORED),
    (b"$5\r\nab\r\nc\r\n", HIT),
    (b"$-1\r\n", MISS),
    (b"-ERR wrong type\r\n", ERROR),
]


@pytest.mark.parametrize("wire, replies", [(MemcacheWire, MEMCACHE_REPLIES), (RespWire, RESP_REPLIES)])
def test_scan_every_split_point(wire, replies) -> None:
    stream = b"".join(reply for reply, _ in replies)
    expected = [kind for _, kind in replies]
    for cut in range(len(stream) + 1):
        buf, kinds, pos = bytearray(stream[:cut]), [], 0
        for part in (None, stream[cut:]):
            if part is not None:
                buf += part
            while (found := wire.scan(buf, pos)) is not None:
                pos, kind = found
                kinds.append(kind)
        assert kinds == expected, cut
        assert pos == len(stream)


def test_scan_refuses_a_get_reply_without_end() -> None:
    with pytest.raises(ValueError):
        MemcacheWire.scan(bytearray(b"VALUE q 0 1\r\nx\r\nXXXXX"), 0)


def test_requests_are_what_the_servers_expect() -> None:
    assert MemcacheWire.set_request(b"q", b"abc") == b"set q 0 0 3\r\nabc\r\n"
    assert MemcacheWire.get_request(b"q") == b"get q\r\n"
    assert RespWire.set_request(b"q", b"abc") == b"*3\r\n$5\r\nRPUSH\r\n$1\r\nq\r\n$3\r\nabc\r\n"
    assert RespWire.get_request(b"q") == b"*2\r\n$4\r\nLPOP\r\n$1\r\nq\r\n"
