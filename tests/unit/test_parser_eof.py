"""End of input as an input (feed_eof): complete commands still come out,
a command the end cut off is reported, nothing is silently dropped."""

from __future__ import annotations

import pytest

from starlingpy.protocol import Get, GetKey, Parser, ProtocolError, Set
from starlingpy.protocol.parser import State


def drain(parser: Parser) -> list:
    commands = []
    while (command := parser.next_command()) is not None:
        commands.append(command)
    return commands


def test_commands_complete_before_the_end_are_still_returned():
    parser = Parser()
    parser.feed(b"set q 0 0 1\r\na\r\nget q\r\n")
    parser.feed_eof()
    assert drain(parser) == [Set(b"q", 0, 0, b"a"), Get((GetKey(b"q", (b"q",)),))]
    assert parser.state is State.CLOSED
    assert parser.next_command() is None


def test_a_set_cut_off_in_its_data_block_is_reported():
    parser = Parser()
    parser.feed(b"set jobs 0 0 10\r\nabc")
    assert parser.next_command() is None
    parser.feed_eof()
    with pytest.raises(ProtocolError) as caught:
        parser.next_command()
    assert caught.value.reply is None and caught.value.close
    assert str(caught.value) == ("connection closed in a set to queue 'jobs': 3 of 10 data bytes "
                                 "received; the item is not stored")
    assert parser.next_command() is None, "reported once"
    assert parser.buffered_bytes == 0


def test_a_set_missing_only_its_terminator_is_reported_too():
    parser = Parser()
    parser.feed(b"set jobs 0 0 3\r\nabc\r")
    parser.feed_eof()
    with pytest.raises(ProtocolError, match="3 of 3 data bytes"):
        parser.next_command()


def test_an_unfinished_command_line_is_reported():
    parser = Parser()
    parser.feed(b"get q\r\nset q 0")
    parser.feed_eof()
    assert parser.next_command() == Get((GetKey(b"q", (b"q",)),))
    with pytest.raises(ProtocolError, match="after 7 bytes of an unfinished command line"):
        parser.next_command()


def test_a_clean_end_reports_nothing():
    parser = Parser()
    parser.feed(b"version\r\n")
    assert parser.next_command() is not None
    parser.feed_eof()
    assert parser.next_command() is None
    assert parser.state is State.CLOSED


def test_the_end_of_a_refused_block_being_dropped_reports_nothing():
    parser = Parser(max_item_size=4)
    parser.feed(b"set q 0 0 100\r\nxx")
    with pytest.raises(ProtocolError):  # too large: answered at once
        parser.next_command()
    assert parser.next_command() is None
    parser.feed_eof()
    assert parser.next_command() is None


def test_feeding_after_the_end_is_a_caller_bug():
    parser = Parser()
    parser.feed_eof()
    with pytest.raises(RuntimeError):
        parser.feed(b"get q\r\n")
