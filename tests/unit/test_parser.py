"""The sans-IO parser, table-driven: input bytes paired with the commands and
errors they must produce, fed whole, one byte at a time and split at every
offset (the sequences must be identical)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from starlingpy.protocol import (
    Delete,
    Flush,
    FlushAll,
    Get,
    GetKey,
    Parser,
    ProtocolError,
    Quit,
    Set,
    Shutdown,
    Stats,
    Verbosity,
    Version,
)

BAD_FORMAT = b"CLIENT_ERROR bad command line format"
BAD_NAME = b"CLIENT_ERROR bad queue name"
BAD_CHUNK = b"CLIENT_ERROR bad data chunk"
TOO_LARGE = b"SERVER_ERROR object too large for cache"
UNSUPPORTED = b"SERVER_ERROR not supported by a queue server"
TOO_LONG = b"CLIENT_ERROR line too long"
ERROR = b"ERROR"


@dataclass(frozen=True)
class Refused:
    """A ProtocolError as an event, so sequences compare with ==."""

    reply: bytes | None
    close: bool = False


def key(raw: bytes, queues: tuple[bytes, ...] | None = None, **options: object) -> GetKey:
    return GetKey(raw, queues if queues is not None else (raw,), **options)  # type: ignore[arg-type]


def get(*raws: bytes) -> Get:
    return Get(tuple(key(raw) for raw in raws))


def drain(parser: Parser, events: list[object]) -> bool:
    """Collect every command/error now available; False once a close error came."""
    for _ in range(100_000):  # bounded: a parser that never says None is a bug
        try:
            command = parser.next_command()
        except ProtocolError as error:
            events.append(Refused(error.reply, error.close))
            if error.close:
                return False
            continue
        if command is None:
            return True
        events.append(command)
    raise AssertionError("parser never asked for more data")


def run(chunks: list[bytes], **limits: int) -> list[object]:
    parser = Parser(**limits)
    events: list[object] = []
    for chunk in chunks:
        parser.feed(chunk)
        if not drain(parser, events):
            break
    return events


def whole(data: bytes, **limits: int) -> list[object]:
    return run([data], **limits)


def bytewise(data: bytes, **limits: int) -> list[object]:
    return run([data[i : i + 1] for i in range(len(data))], **limits)


def assert_split_invariant(data: bytes, expected: list[object], **limits: int) -> None:
    assert whole(data, **limits) == expected
    assert bytewise(data, **limits) == expected
    for cut in range(1, len(data)):
        assert run([data[:cut], data[cut:]], **limits) == expected, f"split at {cut}"


LONG_NAME = b"q" * 250
TOO_LONG_NAME = b"q" * 251
AFTER = b"get after\r\n"

# (id, input, expected events)
CASES: list[tuple[str, bytes, list[object]]] = [
    # -- set -------------------------------------------------------------
    ("set", b"set q 0 0 5\r\nhello\r\n", [Set(b"q", 0, 0, b"hello")]),
    ("set bare newline", b"set q 0 0 5\nhello\r\n", [Set(b"q", 0, 0, b"hello")]),
    ("set noreply", b"set q 1 2 3 noreply\r\nabc\r\n", [Set(b"q", 1, 2, b"abc", True)]),
    ("set empty block", b"set q 0 0 0\r\n\r\n", [Set(b"q", 0, 0, b"")]),
    ("set block holding CRLF", b"set q 0 0 4\r\n\r\n\r\n\r\n", [Set(b"q", 0, 0, b"\r\n\r\n")]),
    ("set binary block", b"set q 0 0 256\r\n" + bytes(range(256)) + b"\r\n", [Set(b"q", 0, 0, bytes(range(256)))]),
    ("set max flags", b"set q 4294967295 0 1\r\nx\r\n", [Set(b"q", 2**32 - 1, 0, b"x")]),
    ("set flags too big", b"set q 4294967296 0 1\r\n", [Refused(BAD_FORMAT)]),
    ("set negative exptime", b"set q 0 -1 1\r\nx\r\n", [Set(b"q", 0, -1, b"x")]),
    ("set max exptime", b"set q 0 9223372036854775807 1\r\nx\r\n", [Set(b"q", 0, 2**63 - 1, b"x")]),
    ("set min exptime", b"set q 0 -9223372036854775808 1\r\nx\r\n", [Set(b"q", 0, -(2**63), b"x")]),
    ("set exptime overflow", b"set q 0 9223372036854775808 1\r\n", [Refused(BAD_FORMAT)]),
    ("set exptime underflow", b"set q 0 -9223372036854775809 1\r\n", [Refused(BAD_FORMAT)]),
    ("set huge digits", b"set q 0 0 " + b"9" * 40 + b"\r\n", [Refused(BAD_FORMAT)]),
    ("set leading zeros", b"set q 007 0 003\r\nabc\r\n", [Set(b"q", 7, 0, b"abc")]),
    ("set extra spaces", b"  set   q  0 0  1  \r\nx\r\n", [Set(b"q", 0, 0, b"x")]),
    ("set 250-byte name", b"set " + LONG_NAME + b" 0 0 1\r\nx\r\n", [Set(LONG_NAME, 0, 0, b"x")]),
    ("set high bytes in name", b"set \xc3\xa9t\xff\x80 0 0 1\r\nx\r\n", [Set(b"\xc3\xa9t\xff\x80", 0, 0, b"x")]),
    ("set dots in name", b"set ../x 0 0 1\r\nx\r\n", [Refused(BAD_NAME)]),
    ("set no args", b"set\r\n", [Refused(BAD_FORMAT)]),
    ("set missing bytes", b"set q 0 0\r\n", [Refused(BAD_FORMAT)]),
    ("set extra field", b"set q 0 0 1 extra\r\n", [Refused(BAD_FORMAT)]),
    ("set extra after noreply", b"set q 0 0 1 noreply x\r\n", [Refused(BAD_FORMAT)]),
    ("set negative bytes", b"set q 0 0 -1\r\n", [Refused(BAD_FORMAT)]),
    ("set signed flags", b"set q +1 0 1\r\n", [Refused(BAD_FORMAT)]),
    ("set negative flags", b"set q -1 0 1\r\n", [Refused(BAD_FORMAT)]),
    ("set underscore digits", b"set q 0 0 1_0\r\n", [Refused(BAD_FORMAT)]),
    ("set float exptime", b"set q 0 1.5 1\r\n", [Refused(BAD_FORMAT)]),
    ("set lone minus exptime", b"set q 0 - 1\r\n", [Refused(BAD_FORMAT)]),
    ("set hex bytes", b"set q 0 0 0x1\r\n", [Refused(BAD_FORMAT)]),
    ("set malformed noreply", b"set q x 0 1 noreply\r\n", [Refused(None)]),
    # A malformed line reads no block (as memcached): the block is a line of its own.
    ("set malformed then block", b"set q x 0 5\r\nhello\r\n", [Refused(BAD_FORMAT), Refused(ERROR)]),
    # A bad name on a well-formed line: the block is swallowed, never run.
    ("set slash name", b"set a/b 0 0 8\r\ndelete q\r\n", [Refused(BAD_NAME)]),
    ("set pipe name", b"set a|b 0 0 1\r\nx\r\n", [Refused(BAD_NAME)]),
    ("set plus name", b"set a+b 0 0 1\r\nx\r\n", [Refused(BAD_NAME)]),
    ("set tilde name", b"set a~b 0 0 1\r\nx\r\n", [Refused(BAD_NAME)]),
    ("set bad name noreply", b"set a/b 0 0 1 noreply\r\nx\r\n", [Refused(None)]),
    ("set 251-byte name", b"set " + TOO_LONG_NAME + b" 0 0 1\r\nx\r\n", [Refused(BAD_FORMAT)]),
    ("set control byte name", b"set a\x01b 0 0 1\r\nx\r\n", [Refused(BAD_FORMAT)]),
    ("set NUL name", b"set a\x00 0 0 1\r\nx\r\n", [Refused(BAD_FORMAT)]),
    ("set DEL name", b"set a\x7f 0 0 1\r\nx\r\n", [Refused(BAD_FORMAT)]),
    ("set tab in name", b"set a\tb 0 0 1\r\nx\r\n", [Refused(BAD_FORMAT)]),
    ("set CR in name", b"set a\rb 0 0 1\r\nx\r\n", [Refused(BAD_FORMAT)]),
    ("set block too long", b"set q 0 0 3\r\nabcd\r\n", [Refused(BAD_CHUNK)]),
    ("set block too short", b"set q 0 0 4\r\nabc\r\nget q\r\n", [Refused(BAD_CHUNK), get(b"q")]),
    ("set block bare newline", b"set q 0 0 3\r\nabc\nget q\r\n", [Refused(BAD_CHUNK), get(b"q")]),
    ("set bad chunk noreply", b"set q 0 0 3 noreply\r\nabcd\r\n", [Refused(None)]),
    # -- get -------------------------------------------------------------
    ("get", b"get q\r\n", [get(b"q")]),
    ("get bare newline", b"get q\n", [get(b"q")]),
    ("gets", b"gets q\r\n", [Get((key(b"q"),), cas=True)]),
    ("gets many", b"gets a b\r\n", [Get((key(b"a"), key(b"b")), cas=True)]),
    ("get many", b"get a b  c\r\n", [get(b"a", b"b", b"c")]),
    ("get no key", b"get\r\n", [Refused(ERROR)]),
    ("get only spaces", b"get   \r\n", [Refused(ERROR)]),
    ("gets no key", b"gets\r\n", [Refused(ERROR)]),
    ("get high bytes", b"get \xff\xfe\r\n", [get(b"\xff\xfe")]),
    ("get 250-byte key", b"get " + LONG_NAME + b"\r\n", [get(LONG_NAME)]),
    ("get 251-byte key", b"get " + TOO_LONG_NAME + b"\r\n", [Refused(BAD_FORMAT)]),
    ("get long compound key", b"get " + b"a|" * 125 + b"a\r\n", [Refused(BAD_FORMAT)]),
    ("get control byte", b"get a\x02\r\n", [Refused(BAD_FORMAT)]),
    ("get control byte in option", b"get a/op\x02en\r\n", [Refused(BAD_FORMAT)]),
    ("get tab", b"get a\tb\r\n", [Refused(BAD_FORMAT)]),
    ("get one bad key of two", b"get a a||b\r\n", [Refused(BAD_NAME)]),
    ("get timeout", b"get q/t=500\r\n", [Get((key(b"q/t=500", (b"q",), timeout_ms=500),))]),
    ("get zero timeout", b"get q/t=0\r\n", [Get((key(b"q/t=0", (b"q",), timeout_ms=0),))]),
    ("get max timeout", b"get q/t=2147483647\r\n", [Get((key(b"q/t=2147483647", (b"q",), timeout_ms=2**31 - 1),))]),
    ("get timeout too big", b"get q/t=2147483648\r\n", [Refused(BAD_FORMAT)]),
    ("get timeout many digits", b"get q/t=00000000001\r\n", [Refused(BAD_FORMAT)]),
    ("get empty timeout", b"get q/t=\r\n", [Refused(BAD_FORMAT)]),
    ("get negative timeout", b"get q/t=-1\r\n", [Refused(BAD_FORMAT)]),
    ("get junk timeout", b"get q/t=1s\r\n", [Refused(BAD_FORMAT)]),
    ("get upper T", b"get q/T=1\r\n", [Refused(BAD_FORMAT)]),
    ("get open", b"get q/open\r\n", [Get((key(b"q/open", (b"q",), open=True),))]),
    ("get close", b"get q/close\r\n", [Get((key(b"q/close", (b"q",), close=True),))]),
    ("get abort", b"get q/abort\r\n", [Get((key(b"q/abort", (b"q",), abort=True),))]),
    ("get peek", b"get q/peek\r\n", [Get((key(b"q/peek", (b"q",), peek=True),))]),
    ("get close open", b"get q/close/open\r\n", [Get((key(b"q/close/open", (b"q",), open=True, close=True),))]),
    ("get open close", b"get q/open/close\r\n", [Get((key(b"q/open/close", (b"q",), open=True, close=True),))]),
    ("get peek timeout", b"get q/peek/t=9\r\n", [Get((key(b"q/peek/t=9", (b"q",), peek=True, timeout_ms=9),))]),
    (
        "get timeout last",
        b"get q/open/t=10\r\n",
        [Get((key(b"q/open/t=10", (b"q",), open=True, timeout_ms=10),))],
    ),
    (
        "get priority",
        b"get pulls|pushes/t=5000/open\r\n",
        [Get((key(b"pulls|pushes/t=5000/open", (b"pulls", b"pushes"), open=True, timeout_ms=5000),))],
    ),
    ("get priority plain", b"get a|b|c\r\n", [Get((key(b"a|b|c", (b"a", b"b", b"c")),))]),
    ("get unknown option", b"get q/foo\r\n", [Refused(BAD_FORMAT)]),
    ("get option case", b"get q/OPEN\r\n", [Refused(BAD_FORMAT)]),
    ("get repeated open", b"get q/open/open\r\n", [Refused(BAD_FORMAT)]),
    ("get repeated timeout", b"get q/t=1/t=2\r\n", [Refused(BAD_FORMAT)]),
    ("get peek open", b"get q/peek/open\r\n", [Refused(BAD_FORMAT)]),
    ("get close peek", b"get q/close/peek\r\n", [Refused(BAD_FORMAT)]),
    ("get peek abort", b"get q/peek/abort\r\n", [Refused(BAD_FORMAT)]),
    ("get abort open", b"get q/abort/open\r\n", [Refused(BAD_FORMAT)]),
    ("get close abort", b"get q/close/abort\r\n", [Refused(BAD_FORMAT)]),
    ("get empty option", b"get q/\r\n", [Refused(BAD_FORMAT)]),
    ("get empty middle option", b"get q//open\r\n", [Refused(BAD_FORMAT)]),
    ("get empty alternative", b"get a||b\r\n", [Refused(BAD_NAME)]),
    ("get leading pipe", b"get |a\r\n", [Refused(BAD_NAME)]),
    ("get trailing pipe", b"get a|/open\r\n", [Refused(BAD_NAME)]),
    ("get options alone", b"get /open\r\n", [Refused(BAD_NAME)]),
    ("get slash alone", b"get /\r\n", [Refused(BAD_NAME)]),
    ("get fanout", b"get a+b\r\n", [Refused(BAD_NAME)]),
    ("get tilde", b"get a~b/open\r\n", [Refused(BAD_NAME)]),
    ("GET is unknown", b"GET q\r\n", [Refused(ERROR)]),
    # -- delete, flush, flush_all ------------------------------------------
    ("delete", b"delete q\r\n", [Delete(b"q")]),
    ("delete noreply", b"delete q noreply\r\n", [Delete(b"q", True)]),
    ("delete time", b"delete q 0\r\n", [Delete(b"q")]),
    ("delete time noreply", b"delete q 10 noreply\r\n", [Delete(b"q", True)]),
    ("delete no queue", b"delete\r\n", [Refused(BAD_FORMAT)]),
    ("delete bad time", b"delete q x\r\n", [Refused(BAD_FORMAT)]),
    ("delete negative time", b"delete q -1\r\n", [Refused(BAD_FORMAT)]),
    ("delete extra", b"delete q 0 noreply x\r\n", [Refused(BAD_FORMAT)]),
    ("delete bad name", b"delete a/b\r\n", [Refused(BAD_NAME)]),
    ("delete bad name noreply", b"delete a|b noreply\r\n", [Refused(None)]),
    ("delete long name", b"delete " + TOO_LONG_NAME + b"\r\n", [Refused(BAD_FORMAT)]),
    ("flush", b"flush q\r\n", [Flush(b"q")]),
    ("flush no queue", b"flush\r\n", [Refused(BAD_FORMAT)]),
    ("flush extra", b"flush q r\r\n", [Refused(BAD_FORMAT)]),
    ("flush bad name", b"flush a~b\r\n", [Refused(BAD_NAME)]),
    ("flush_all", b"flush_all\r\n", [FlushAll()]),
    ("flush_all delay", b"flush_all 10\r\n", [FlushAll(10)]),
    ("flush_all noreply", b"flush_all noreply\r\n", [FlushAll(0, True)]),
    ("flush_all delay noreply", b"flush_all 5 noreply\r\n", [FlushAll(5, True)]),
    ("flush_all bad delay", b"flush_all x\r\n", [Refused(BAD_FORMAT)]),
    ("flush_all negative delay", b"flush_all -1\r\n", [Refused(BAD_FORMAT)]),
    ("flush_all extra", b"flush_all 1 2\r\n", [Refused(BAD_FORMAT)]),
    # -- stats, version, verbosity, quit, shutdown -------------------------
    ("stats", b"stats\r\n", [Stats()]),
    ("stats argument", b"stats queues\r\n", [Stats(b"queues")]),
    ("stats two arguments", b"stats a b\r\n", [Refused(BAD_FORMAT)]),
    ("version", b"version\r\n", [Version()]),
    ("version extra", b"version 1\r\n", [Refused(BAD_FORMAT)]),
    ("verbosity", b"verbosity 1\r\n", [Verbosity(1)]),
    ("verbosity noreply", b"verbosity 2 noreply\r\n", [Verbosity(2, True)]),
    ("verbosity no level", b"verbosity\r\n", [Refused(BAD_FORMAT)]),
    ("verbosity bad level", b"verbosity x\r\n", [Refused(BAD_FORMAT)]),
    ("verbosity extra", b"verbosity 1 2\r\n", [Refused(BAD_FORMAT)]),
    ("quit", b"quit\r\n", [Quit()]),
    ("quit extra", b"quit now\r\n", [Refused(BAD_FORMAT)]),
    ("shutdown", b"shutdown\r\n", [Shutdown()]),
    ("shutdown extra", b"shutdown graceful\r\n", [Refused(BAD_FORMAT)]),
    # -- unknown and empty -------------------------------------------------
    ("unknown", b"foo bar\r\n", [Refused(ERROR)]),
    ("empty line", b"\r\n", [Refused(ERROR)]),
    ("empty bare line", b"\n", [Refused(ERROR)]),
    ("blank line", b"   \r\n", [Refused(ERROR)]),
    ("binary junk line", b"\x00\xff\x01junk\r\n", [Refused(ERROR)]),
    ("meta command", b"mg q v\r\n", [Refused(ERROR)]),
    # -- refused storage commands --------------------------------------------
    ("add", b"add q 0 0 3\r\nabc\r\n", [Refused(UNSUPPORTED)]),
    ("replace", b"replace q 0 0 3\r\nabc\r\n", [Refused(UNSUPPORTED)]),
    ("append", b"append q 0 0 3\r\nabc\r\n", [Refused(UNSUPPORTED)]),
    ("prepend noreply", b"prepend q 0 0 3 noreply\r\nabc\r\n", [Refused(None)]),
    ("cas", b"cas q 0 0 3 99\r\nabc\r\n", [Refused(UNSUPPORTED)]),
    ("cas noreply", b"cas q 0 0 3 99 noreply\r\nabc\r\n", [Refused(None)]),
    ("cas missing unique", b"cas q 0 0 3\r\n", [Refused(BAD_FORMAT)]),
    ("add malformed", b"add q 0 0\r\n", [Refused(BAD_FORMAT)]),
    ("add bad number", b"add q 0 0 x\r\n", [Refused(BAD_FORMAT)]),
    ("add block is swallowed", b"add q 0 0 8\r\ndelete q\r\n", [Refused(UNSUPPORTED)]),
    ("incr", b"incr q 1\r\n", [Refused(UNSUPPORTED)]),
    ("decr noreply", b"decr q 1 noreply\r\n", [Refused(None)]),
    ("touch", b"touch q 10\r\n", [Refused(UNSUPPORTED)]),
    ("incr malformed", b"incr q\r\n", [Refused(BAD_FORMAT)]),
    # -- pipelined mixes -----------------------------------------------------
    (
        "pipeline",
        (
            b"set a 0 0 1\r\n1\r\nset b 5 0 2 noreply\r\n22\r\nget a b\r\nbogus\r\ndelete a\r\n"
            b"gets b/open\r\nstats\r\nflush b\r\nversion\r\nquit\r\n"
        ),
        [
            Set(b"a", 0, 0, b"1"),
            Set(b"b", 5, 0, b"22", True),
            get(b"a", b"b"),
            Refused(ERROR),
            Delete(b"a"),
            Get((key(b"b/open", (b"b",), open=True),), cas=True),
            Stats(),
            Flush(b"b"),
            Version(),
            Quit(),
        ],
    ),
    (
        "pipeline through errors",
        b"set q 0 0 2\r\nabc\r\nset a/b 0 0 1\r\nx\r\nadd q 0 0 1\r\ny\r\nget a||b\r\n\r\nset q 0 0 1\nz\r\n",
        [
            Refused(BAD_CHUNK),
            Refused(BAD_NAME),
            Refused(UNSUPPORTED),
            Refused(BAD_NAME),
            Refused(ERROR),
            Set(b"q", 0, 0, b"z"),
        ],
    ),
]


@pytest.mark.parametrize(("data", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_table_fed_whole_bytewise_and_split_everywhere(data: bytes, expected: list[object]) -> None:
    assert_split_invariant(data, expected)


ERROR_CASES = [case for case in CASES if any(isinstance(event, Refused) for event in case[2])]


@pytest.mark.parametrize(
    ("data", "expected"), [case[1:] for case in ERROR_CASES], ids=[case[0] for case in ERROR_CASES]
)
def test_connection_stays_usable_after_each_error(data: bytes, expected: list[object]) -> None:
    assert_split_invariant(data + AFTER, [*expected, get(b"after")])


# -- too large and refused blocks: discarded as they arrive ------------------


def test_block_at_the_limit_is_stored_and_one_past_it_is_refused() -> None:
    limit = {"max_item_size": 10}
    assert whole(b"set q 0 0 10\r\n" + b"x" * 10 + b"\r\n", **limit) == [Set(b"q", 0, 0, b"x" * 10)]
    data = b"set q 0 0 11\r\n" + b"x" * 11 + b"\r\n" + AFTER
    assert_split_invariant(data, [Refused(TOO_LARGE), get(b"after")], **limit)
    data = b"set q 0 0 11 noreply\r\n" + b"x" * 11 + b"\r\n" + AFTER
    assert_split_invariant(data, [Refused(None), get(b"after")], **limit)


def test_too_large_discards_exactly_bytes_plus_two() -> None:
    # Whatever the two bytes after the block are, exactly size + 2 are dropped.
    data = b"set q 0 0 11\r\n" + b"x" * 11 + b"zzget after\r\n"
    assert_split_invariant(data, [Refused(TOO_LARGE), get(b"after")], max_item_size=10)


def test_too_large_block_is_never_held() -> None:
    parser = Parser(max_item_size=1024)
    size = 10 * 1024 * 1024
    chunk = b"x" * 65536
    parser.feed(b"set big 0 0 %d\r\n" % size)
    with pytest.raises(ProtocolError) as caught:  # answered at once, before the block
        parser.next_command()
    assert (caught.value.reply, caught.value.close) == (TOO_LARGE, False)
    sent = 0
    while sent + len(chunk) <= size:
        parser.feed(chunk)
        sent += len(chunk)
        assert parser.buffered_bytes == 0
        if sent % (4 * len(chunk)) == 0:  # the caller may also feed several times in a row
            assert parser.next_command() is None
    parser.feed(b"y" * (size - sent) + b"\r\n" + AFTER)
    assert parser.buffered_bytes <= 2 + len(AFTER)
    assert parser.next_command() == get(b"after")
    assert parser.next_command() is None
    assert parser.buffered_bytes == 0


def test_an_absurd_declared_length_is_refused_and_closes() -> None:
    parser = Parser(max_item_size=1024)
    parser.feed(b"set big 0 0 %d\r\n" % (1 << 40))
    with pytest.raises(ProtocolError) as caught:
        parser.next_command()
    assert (caught.value.reply, caught.value.close) == (TOO_LARGE, True)


def test_a_binary_protocol_request_is_refused_and_closes_without_a_newline() -> None:
    parser = Parser()
    parser.feed(b"\x80\x00\x00\x03abc")  # a binary GET header's start: no newline ever
    with pytest.raises(ProtocolError) as caught:
        parser.next_command()
    assert (caught.value.reply, caught.value.close) == (b"ERROR", True)


def test_refused_storage_block_is_dropped_whatever_its_size() -> None:
    parser = Parser(max_item_size=1024)
    parser.feed(b"append q 0 0 1000000\r\n")
    assert parser.next_command() is None
    for _ in range(100):
        parser.feed(b"z" * 10_000)
        assert parser.buffered_bytes == 0
    parser.feed(b"\r\n" + AFTER)
    with pytest.raises(ProtocolError) as caught:
        parser.next_command()
    assert caught.value.reply == UNSUPPORTED
    assert parser.next_command() == get(b"after")


def test_garbage_after_bad_chunk_is_skipped_without_being_held() -> None:
    parser = Parser()
    parser.feed(b"set q 0 0 1\r\nxyz")
    with pytest.raises(ProtocolError) as caught:
        parser.next_command()
    assert caught.value.reply == BAD_CHUNK
    for _ in range(50):
        parser.feed(b"g" * 4096)  # no newline: the garbled block goes on
        assert parser.next_command() is None
        assert parser.buffered_bytes == 0
    parser.feed(b"\r\n" + AFTER)
    assert parser.next_command() == get(b"after")


def test_set_block_may_be_large_and_split_anywhere() -> None:
    data = bytes(range(256)) * 400  # 100 KiB, so the large-block copy is used
    message = b"set q 3 0 %d\r\n" % len(data) + data + b"\r\n" + AFTER
    expected = [Set(b"q", 3, 0, data), get(b"after")]
    assert whole(message) == expected
    for cut in (1, 20, 21, 1000, len(message) - 13, len(message) - 12, len(message) - 11):
        assert run([message[:cut], message[cut:]]) == expected
    assert run([message[i : i + 4093] for i in range(0, len(message), 4093)]) == expected


def test_pending_block_is_not_returned_until_its_terminator_arrives() -> None:
    parser = Parser()
    parser.feed(b"set q 0 0 3\r\nabc")
    assert parser.next_command() is None
    parser.feed(b"\r")
    assert parser.next_command() is None
    parser.feed(b"\n")
    assert parser.next_command() == Set(b"q", 0, 0, b"abc")
    assert parser.next_command() is None
    assert parser.buffered_bytes == 0


# -- line too long -----------------------------------------------------------


def test_line_of_exactly_max_line_is_parsed() -> None:
    line = b"get " + b"k" * 12  # 16 bytes
    assert_split_invariant(line + b"\r\n", [get(b"k" * 12)], max_line=16)
    assert_split_invariant(line + b"\n", [get(b"k" * 12)], max_line=16)


@pytest.mark.parametrize("terminator", [b"\r\n", b"\n", b""])
def test_line_over_max_line_closes(terminator: bytes) -> None:
    data = b"get q\r\n" + b"get " + b"k" * 13 + terminator + AFTER
    expected = [get(b"q"), Refused(TOO_LONG, close=True)]
    assert whole(data, max_line=16) == expected
    assert bytewise(data, max_line=16) == expected


def test_default_line_limit_is_2048() -> None:
    assert whole(b"stats " + b"s" * 2042 + b"\r\n") == [Stats(b"s" * 2042)]
    assert whole(b"stats " + b"s" * 2043 + b"\r\n") == [Refused(TOO_LONG, close=True)]


def test_unfinished_line_is_bounded_and_the_parser_stays_closed() -> None:
    parser = Parser(max_line=2048)
    chunk = b"a" * 1000
    with pytest.raises(ProtocolError) as caught:
        for _ in range(10):
            parser.feed(chunk)
            assert parser.buffered_bytes <= 2048 + 2 + len(chunk)
            assert parser.next_command() is None
    assert (caught.value.reply, caught.value.close) == (TOO_LONG, True)
    parser.feed(b"\r\nget q\r\n")
    assert parser.buffered_bytes == 0
    with pytest.raises(ProtocolError) as again:
        parser.next_command()
    assert again.value.close is True


def test_line_limit_does_not_apply_to_data_blocks() -> None:
    data = b"z" * 5000
    assert whole(b"set q 0 0 5000\r\n" + data + b"\r\n", max_line=64) == [Set(b"q", 0, 0, data)]


# -- buffer housekeeping -----------------------------------------------------


def test_buffered_bytes_is_the_unparsed_input_whenever_more_is_needed() -> None:
    parser = Parser()
    assert parser.buffered_bytes == 0
    parser.feed(b"get a\r\nget b\r\nget")
    assert parser.buffered_bytes == 17
    assert parser.next_command() == get(b"a")
    assert parser.next_command() == get(b"b")
    assert parser.next_command() is None
    assert parser.buffered_bytes == 3
    parser.feed(b" c\r\nset q 0 0 5\r\nab")
    assert parser.next_command() == get(b"c")
    assert parser.next_command() is None
    assert parser.buffered_bytes == 2  # the partial block only
    parser.feed(b"cde\r\n")
    assert parser.next_command() == Set(b"q", 0, 0, b"abcde")
    assert parser.next_command() is None
    assert parser.buffered_bytes == 0


def test_parsed_input_is_not_kept_across_many_feeds() -> None:
    parser = Parser()
    for number in range(2000):
        parser.feed(b"set q 0 0 3\r\nabc\r\nget q/t=%d\r\nget" % number)
        assert parser.next_command() == Set(b"q", 0, 0, b"abc")
        assert parser.next_command() == Get((key(b"q/t=%d" % number, (b"q",), timeout_ms=number),))
        assert parser.next_command() is None
        assert parser.buffered_bytes == 3
        parser.feed(b" x\r\n")
        assert parser.next_command() == get(b"x")


def test_line_too_long_is_detected_as_soon_as_it_cannot_fit() -> None:
    # max_line content + "\r" + "\n" is the longest valid line: 18 bytes with
    # no newline among them cannot become one.
    parser = Parser(max_line=16)
    parser.feed(b"g" * 17)
    assert parser.next_command() is None
    parser.feed(b"g")
    with pytest.raises(ProtocolError) as caught:
        parser.next_command()
    assert (caught.value.reply, caught.value.close) == (TOO_LONG, True)


def test_many_pipelined_commands_in_one_feed() -> None:
    count = 5000
    parser = Parser()
    parser.feed(b"set q 0 0 2\r\nhi\r\nget q\r\n" * count)
    events: list[object] = []
    assert drain(parser, events)
    assert events == [Set(b"q", 0, 0, b"hi"), get(b"q")] * count
    assert parser.buffered_bytes == 0


def test_empty_feed_changes_nothing() -> None:
    parser = Parser()
    parser.feed(b"")
    assert parser.next_command() is None
    parser.feed(b"get q")
    parser.feed(b"")
    assert parser.next_command() is None
    parser.feed(b"\r\n")
    assert parser.next_command() == get(b"q")


def test_parsed_keys_are_equal_across_calls() -> None:
    # Keys are memoised; a memo must never hand back a different key.
    first = whole(b"get q/open a|b\r\n")
    second = whole(b"get q/open a|b\r\n")
    assert first == second == [Get((key(b"q/open", (b"q",), open=True), key(b"a|b", (b"a", b"b"))))]
