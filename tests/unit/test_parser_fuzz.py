"""Seeded random streams of valid and broken commands: the parser raises
nothing but ProtocolError, stays bounded, and gives the same events however
the stream is chunked."""

from __future__ import annotations

import random

from starlingpy.protocol import Parser, ProtocolError

MAX_LINE = 64
MAX_ITEM = 32

FRAGMENTS = [
    b"set q 0 0 3\r\nabc\r\n",
    b"set q 0 0 3 noreply\r\nabc\r\n",
    b"set q 0 0 40\r\n" + b"L" * 40 + b"\r\n",  # over MAX_ITEM
    b"set q 0 0 3\r\nab",  # short block
    b"set q 0 -1 0\r\n\r\n",
    b"set a/b 0 0 1\r\nx\r\n",
    b"set q x 0 1\r\n",
    b"get q\r\n",
    b"gets a|b/t=10/open\r\n",
    b"get q/peek/open\r\n",
    b"get a||b\r\n",
    b"get /open\n",
    b"delete q noreply\r\n",
    b"flush_all 0\r\n",
    b"stats\r\n",
    b"add q 0 0 2\r\nxy\r\n",
    b"cas q 0 0 50 1\r\n" + b"C" * 50 + b"\r\n",
    b"incr q 1\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"noreply ",
    b"\x00\x7f\xff",
    b"get " + b"k" * 70,  # over MAX_LINE once it has no newline soon
    b"9999999999999999999999 ",
]


def events_of(chunks: list[bytes]) -> tuple[list[object], int]:
    """Feed chunks, draining after each; return the events and the peak held bytes."""
    parser = Parser(max_line=MAX_LINE, max_item_size=MAX_ITEM)
    events: list[object] = []
    peak = 0
    for chunk in chunks:
        parser.feed(chunk)
        peak = max(peak, parser.buffered_bytes)
        for _ in range(10_000):
            try:
                command = parser.next_command()
            except ProtocolError as error:
                events.append(("refused", error.reply, error.close))
                if error.close:
                    return events, peak
                continue
            if command is None:
                break
            events.append(command)
        else:
            raise AssertionError("parser never asked for more data")
        peak = max(peak, parser.buffered_bytes)
    return events, peak


def random_stream(rng: random.Random) -> bytes:
    pieces = []
    for _ in range(rng.randint(1, 12)):
        if rng.random() < 0.15:
            pieces.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))))
        else:
            pieces.append(rng.choice(FRAGMENTS))
    return b"".join(pieces)


def random_chunks(rng: random.Random, data: bytes) -> list[bytes]:
    chunks = []
    start = 0
    while start < len(data):
        size = rng.randint(1, 16)
        chunks.append(data[start : start + size])
        start += size
    return chunks


def test_random_streams_are_chunking_invariant_and_bounded() -> None:
    rng = random.Random(20261127)
    # The block of a pending set (at most MAX_ITEM + 2) plus a line window
    # (MAX_LINE + 2) plus one chunk is the most the parser may hold.
    bound = (MAX_ITEM + 2) + (MAX_LINE + 2) + 16
    for _ in range(1500):
        data = random_stream(rng)
        expected, _ = events_of([data])
        bytewise, bytewise_peak = events_of([data[i : i + 1] for i in range(len(data))])
        chunked, chunked_peak = events_of(random_chunks(rng, data))
        assert bytewise == expected, data
        assert chunked == expected, data
        assert bytewise_peak <= bound and chunked_peak <= bound, data


def test_random_bytes_raise_nothing_but_protocol_errors() -> None:
    rng = random.Random(7)
    alphabet = b"setgdlfuaxnoryp0123456789 -/|+~=\r\n\x00\xff"
    for _ in range(300):
        data = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 200)))
        events_of(random_chunks(rng, data))  # any other exception fails the test
