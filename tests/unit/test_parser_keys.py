"""Queue-name checks and get-key parsing, called directly (the parser tests
drive the same code through bytes)."""

from __future__ import annotations

import pytest

from starlingpy.protocol import Get, GetKey, Parser, ProtocolError
from starlingpy.protocol import parser as parser_module
from starlingpy.protocol.keys import (
    BAD_FORMAT,
    BAD_QUEUE_NAME,
    check_queue_name,
    is_plain_queue_name,
    parse_get_key,
    queue_name_error,
)

NAMES = [
    (b"q", None),
    (b"jobs.high-priority_2", None),
    (b"..", None),  # harmless here: turning names into paths is the names module's job
    (b"\xc3\xa9\xff\x80", None),
    (b"x" * 250, None),
    (b"x" * 251, BAD_FORMAT),
    (b"", BAD_FORMAT),
    (b"a b", BAD_FORMAT),
    (b"a\tb", BAD_FORMAT),
    (b"a\x00", BAD_FORMAT),
    (b"\x1f", BAD_FORMAT),
    (b"a\x7f", BAD_FORMAT),
    (b"a/b", BAD_QUEUE_NAME),
    (b"../x", BAD_QUEUE_NAME),
    (b"/etc/x", BAD_QUEUE_NAME),
    (b"a|b", BAD_QUEUE_NAME),
    (b"parent+child", BAD_QUEUE_NAME),
    (b"~tmp", BAD_QUEUE_NAME),
]


@pytest.mark.parametrize(("name", "reply"), NAMES)
def test_plain_queue_names(name: bytes, reply: bytes | None) -> None:
    assert queue_name_error(name) == reply
    assert is_plain_queue_name(name) is (reply is None)
    if reply is None:
        assert check_queue_name(name) == name
    else:
        with pytest.raises(ProtocolError) as caught:
            check_queue_name(name)
        assert (caught.value.reply, caught.value.close) == (reply, False)
        with pytest.raises(ProtocolError) as quiet:
            check_queue_name(name, noreply=True)
        assert quiet.value.reply is None


def test_get_key_options_in_any_order_give_the_same_meaning() -> None:
    one = parse_get_key(b"a|b/t=7/close/open")
    other = parse_get_key(b"a|b/open/t=7/close")
    assert one.raw != other.raw
    assert (one.queues, one.timeout_ms, one.open, one.close) == ((b"a", b"b"), 7, True, True)
    assert (other.queues, other.timeout_ms, other.open, other.close) == ((b"a", b"b"), 7, True, True)
    assert not (one.abort or one.peek or other.abort or other.peek)


def test_get_line_memo_stays_bounded_and_correct() -> None:
    parser = Parser()
    for i in range(3000):
        parser.feed(b"get single%d\r\nget single%d/t=%d\r\n" % (i, i % 7, i % 7))
        assert parser.next_command() == Get((GetKey(b"single%d" % i, (b"single%d" % i,)),))
        raw = b"single%d/t=%d" % (i % 7, i % 7)
        assert parser.next_command() == Get((GetKey(raw, (raw.split(b"/")[0],), timeout_ms=i % 7),))
    assert len(parser._get_lines) <= parser_module._MEMO_ENTRIES


def test_memos_belong_to_one_parser() -> None:
    first, second = Parser(), Parser()
    first.feed(b"get shared\r\nset shared 0 0 1\r\nx\r\n")
    assert first.next_command() is not None and first.next_command() is not None
    assert first._get_lines and first._set_names
    assert not second._get_lines and not second._set_names, "no state shared between connections"


@pytest.mark.parametrize(
    ("raw", "reply"),
    [
        (b"/open", BAD_QUEUE_NAME),
        (b"a||b", BAD_QUEUE_NAME),
        (b"a|+b", BAD_QUEUE_NAME),
        (b"a/open/peek", BAD_FORMAT),
        (b"a/abort/close", BAD_FORMAT),
        (b"a/t=1/t=1", BAD_FORMAT),
        (b"a/t=99999999999", BAD_FORMAT),
        (b"a/", BAD_FORMAT),
        (b"a b", BAD_FORMAT),
        (b"a" * 251, BAD_FORMAT),
    ],
)
def test_bad_get_keys(raw: bytes, reply: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_get_key(raw)
    assert caught.value.reply == reply
