"""Reply formatting: exact bytes on the wire."""

from __future__ import annotations

from starlingpy.protocol import replies


def test_value_line_and_block() -> None:
    assert replies.value(b"q", 0, b"hello") == b"VALUE q 0 5\r\nhello\r\n"


def test_value_echoes_the_key_as_sent_with_flags() -> None:
    assert replies.value(b"a|b/t=10/open", 4294967295, b"x") == b"VALUE a|b/t=10/open 4294967295 1\r\nx\r\n"


def test_value_with_cas_field_for_gets() -> None:
    assert replies.value(b"q", 2, b"abc", cas=True) == b"VALUE q 2 3 0\r\nabc\r\n"


def test_value_empty_and_binary_data() -> None:
    assert replies.value(b"q", 0, b"") == b"VALUE q 0 0\r\n\r\n"
    data = bytes(range(256)) + b"\r\nEND\r\n"
    assert replies.value(b"\xff", 1, data) == b"VALUE \xff 1 %d\r\n" % len(data) + data + b"\r\n"


def test_stats_lines_then_end() -> None:
    wire = replies.stats(
        [
            ("pid", 42),
            ("uptime", 0),
            ("rusage_user", 1.5),
            ("version", "0.1.0"),
            (b"queue_\xc3\xa9_items", 3),
            ("queue_q_age", b"17"),
            ("flag", True),
        ]
    )
    assert wire == (
        b"STAT pid 42\r\n"
        b"STAT uptime 0\r\n"
        b"STAT rusage_user 1.500000\r\n"
        b"STAT version 0.1.0\r\n"
        b"STAT queue_\xc3\xa9_items 3\r\n"
        b"STAT queue_q_age 17\r\n"
        b"STAT flag 1\r\n"
        b"END\r\n"
    )


def test_stats_empty_and_from_a_generator() -> None:
    assert replies.stats([]) == b"END\r\n"
    assert replies.stats((f"n{i}", i) for i in range(2)) == b"STAT n0 0\r\nSTAT n1 1\r\nEND\r\n"


def test_version() -> None:
    assert replies.version("0.1.0") == b"VERSION 0.1.0\r\n"
