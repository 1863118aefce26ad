"""The sans-IO memcache text protocol parser: bytes in, commands out.

Usage (the I/O shell owns the socket; this object owns only bytes)::

    parser = Parser()
    parser.feed(received)            # or parser.feed_eof() once the peer closed
    while True:
        try:
            command = parser.next_command()
        except ProtocolError as error:
            send error.reply (unless None); close if error.close, else go on
        if command is None:
            break            # need more data (or, after feed_eof, all done)
        dispatch(command)

Shaped after h11: the parser is in one :class:`State` at a time and each
state has its reader (``_READERS``); end-of-file is an input like bytes, and
what it means depends on the state (a ``set`` whose data block was cut off
is reported, not silently dropped). All state is per parser: no memo is
shared between connections or tests.

Rules the parser keeps:

- A command line ends in ``\\r\\n`` or a bare ``\\n``; tokens are separated
  by spaces (as memcached: a tab is part of a token, and so makes it invalid).
- Memory is bounded: an unfinished line is never held beyond ``max_line``
  bytes (plus the chunk that overflowed it), and a data block over
  ``max_item_size``, or one of a command we refuse, is dropped as it arrives.
- Every error leaves the parser at the start of the next command, except
  ``close=True`` errors, after which the caller must close the connection
  (the parser then ignores input and raises that error again).
- Any exception other than :class:`ProtocolError` is a bug.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from .commands import (
    Command,
    Delete,
    Flush,
    FlushAll,
    Get,
    Quit,
    Set,
    Shutdown,
    Stats,
    Verbosity,
    Version,
)
from .errors import ProtocolError
from .keys import (
    BAD_FORMAT,
    check_queue_name,
    is_plain_queue_name,
    parse_get_key,
    parse_set_key,
    queue_name_error,
)

ERROR = b"ERROR"
LINE_TOO_LONG = b"CLIENT_ERROR line too long"
BAD_DATA_CHUNK = b"CLIENT_ERROR bad data chunk"
TOO_LARGE = b"SERVER_ERROR object too large for cache"
MAX_SANE_BLOCK = 1 << 30  # a declared length past this closes the connection after the error
BINARY_MAGIC = 0x80  # first byte of every memcached binary-protocol request
NOT_SUPPORTED = b"SERVER_ERROR not supported by a queue server"

_NOREPLY = b"noreply"
_MAX_U32 = 2**32 - 1
_MAX_I64 = 2**63 - 1
_MAX_DIGITS = 20  # guards int() against absurdly long digit strings
_SMALL_BLOCK = 4096  # up to this, slicing is cheaper than a memoryview

# Per-parser memos (see Parser): entries each, and the longest get line kept,
# so a connection's memos stay a few kilobytes however many connections run.
_MEMO_ENTRIES = 64
_MEMO_LINE = 256


class State(enum.Enum):
    """What the parser is waiting for."""

    LINES = "the next command line"
    BLOCK = "the rest of a set's data block"  # held: it becomes the item
    DISCARD = "the rest of a refused data block"  # dropped as it arrives
    SKIP = "the end of a garbled line after a bad data chunk"  # dropped
    DEAD = "nothing: a close=True error was raised"
    CLOSED = "nothing: end of input was fed"


_LINES, _BLOCK, _DISCARD, _SKIP, _DEAD, _CLOSED = State  # the hot path compares with `is`


def _unsigned(token: bytes, limit: int) -> int | None:
    """``token`` as a decimal in 0..limit, or None."""
    if token.isdigit() and len(token) <= _MAX_DIGITS:
        value = int(token)
        if value <= limit:
            return value
    return None


def _signed64(token: bytes) -> int | None:
    """``token`` as a signed 64-bit decimal, or None."""
    if token[:1] == b"-":
        value = _unsigned(token[1:], _MAX_I64 + 1)
        return None if value is None else -value
    return _unsigned(token, _MAX_I64)


def _bad_format(tokens: list[bytes]) -> ProtocolError:
    # A trailing noreply is honoured even on a malformed line, as memcached
    # does: the client is not reading a reply, so one would desynchronise it.
    return ProtocolError(None if tokens[-1] == _NOREPLY else BAD_FORMAT)


def _remember(memo: dict, key, value) -> None:
    """Store in a bounded memo: crude (it empties when full) but bounded, so a
    client cycling through ever new keys only costs misses."""
    if len(memo) >= _MEMO_ENTRIES:
        memo.clear()
    memo[key] = value


class Parser:
    """Incremental parser of client → server memcache text protocol bytes.

    ``max_line`` bounds a command line (without its terminator);
    ``max_item_size`` bounds a ``set`` data block: larger blocks are dropped
    as they arrive and answered ``SERVER_ERROR object too large for cache``.

    Two small memos, this connection's own, skip work a client repeats:
    whole ``get`` lines and their commands (a worker polls the same few
    queues over and over; a Get depends on its line alone and is immutable),
    and the queue names ``set`` accepted (a hit skips the validity scan and
    hands on one bytes object whose hash is already computed).
    """

    __slots__ = (
        "_block",
        "_buf",
        "_discard_left",
        "_eof",
        "_error",
        "_get_lines",
        "_max_item_size",
        "_max_line",
        "_pos",
        "_set_names",
        "_state",
        "_window",
    )

    def __init__(self, max_line: int = 2048, max_item_size: int = 16 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._pos = 0  # read offset; the parsed prefix is cut on feed()
        self._state = _LINES
        self._max_line = max_line
        # A valid line and its terminator fit in max_line + 2 bytes, so that
        # is as far as a search for "\n" ever needs to look.
        self._window = max_line + 2
        self._max_item_size = max_item_size
        self._block: tuple[bytes, int, int, int, bool, tuple | None] | None = None
        self._discard_left = 0
        self._error: ProtocolError | None = None  # raised when a discard ends, or on every call once dead
        self._get_lines: dict[bytes, Get] = {}
        self._set_names: dict[bytes, bytes] = {}
        self._eof = False

    @property
    def state(self) -> State:
        return self._state

    @property
    def buffered_bytes(self) -> int:
        """Bytes of input not parsed yet. The parser holds at most these plus
        the already parsed part of the last chunk fed (cut on the next feed)."""
        return len(self._buf) - self._pos

    def _drop_buffered(self) -> None:
        del self._buf[:]
        self._pos = 0

    def feed(self, data: bytes) -> None:
        """Add received bytes. Never raises for any input; errors surface in
        next_command(). Feeding after feed_eof() is a caller bug (RuntimeError)."""
        state = self._state
        if state is _DEAD:
            return
        if self._eof:
            raise RuntimeError("feed() after feed_eof()")
        if self._pos:
            # The one place the parsed prefix is cut (h11 too compacts once
            # per event batch, not per event): cutting a bytearray's front is
            # cheap in CPython, it moves the array's start instead of copying.
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data
        if state is _DISCARD or state is _SKIP:
            self._drop()

    def feed_eof(self) -> None:
        """The peer closed its side: no more bytes will come. Commands already
        complete are still returned; then next_command() reports a command
        the end cut off (a ProtocolError with no reply and ``close=True``
        whose message says what was lost) and from then on returns None."""
        self._eof = True

    def next_command(self) -> Command | None:
        """Return the next complete command, or None when more data is needed
        (after feed_eof(): when the input is used up).

        Raises ProtocolError for input the protocol refuses (see its
        ``reply`` and ``close``); after a ``close=False`` error the next call
        continues with the input that follows.
        """
        if self._state is not _LINES:
            command = _READERS[self._state](self)
            if command is not None:
                return command
            if self._state is not _LINES:  # still waiting (a block reader saw the end itself)
                return self._read_eof() if self._eof else None
        buf = self._buf
        pos = self._pos
        if pos < len(buf) and buf[pos] == BINARY_MAGIC:
            # memcached's binary protocol: no newline will come; say so and close.
            self._die(ERROR)
        newline = buf.find(b"\n", pos, pos + self._window)
        if newline < 0:
            if len(buf) - pos >= self._window:
                self._die(LINE_TOO_LONG)
            return self._read_eof() if self._eof else None
        self._pos = newline + 1
        end = newline - 1 if newline > pos and buf[newline - 1] == 13 else newline
        if end - pos > self._max_line:
            self._die(LINE_TOO_LONG)
        line = bytes(buf[pos:end])
        command = self._get_lines.get(line)
        if command is not None:
            return command
        tokens = line.split(b" ")
        if b"" in tokens:  # runs of spaces, or leading/trailing ones: rare
            tokens = [token for token in tokens if token]
            if not tokens:
                raise ProtocolError(ERROR)
        handler = _HANDLERS.get(tokens[0])
        if handler is None:
            raise ProtocolError(ERROR)
        command = handler(self, tokens)
        if command.__class__ is Get and len(line) <= _MEMO_LINE:
            _remember(self._get_lines, line, command)
        return command

    # -- readers of the states other than LINES ------------------------------

    def _read_block(self) -> Set | None:
        assert self._block is not None
        return self._take_block(*self._block)

    def _read_dropped(self) -> None:
        """DISCARD or SKIP: drop what arrived; raise the discard's error once
        it is over (the state is LINES again after either)."""
        self._drop()
        if self._state is _DISCARD and not self._discard_left:
            error, self._error = self._error, None
            self._state = _LINES
            if error is not None:  # (None: it was answered when the discard began)
                raise error

    def _read_dead(self) -> None:
        assert self._error is not None
        # A fresh exception each time: re-raising one object would keep
        # growing its traceback.
        raise ProtocolError(self._error.reply, close=True)

    def _read_closed(self) -> None:
        return None

    def _read_eof(self) -> None:
        """End of input while waiting in the current state: what was cut off."""
        state, left = self._state, len(self._buf) - self._pos
        self._state = _CLOSED
        self._drop_buffered()
        if state is _BLOCK:
            queue, _, _, size, _, _ = self._block
            self._block = None
            raise ProtocolError(None, close=True, detail=(
                f"connection closed in a set to queue {queue.decode(errors='replace')!r}: "
                f"{min(left, size)} of {size} data bytes received; the item is not stored"))
        if state is _LINES and left:
            raise ProtocolError(None, close=True, detail=(
                f"connection closed after {left} bytes of an unfinished command line"))
        return None  # nothing cut off (a refused block was being dropped anyway)

    # -- helpers -------------------------------------------------------------

    def _drop(self) -> None:
        """Drop input a discard or skip is swallowing, without holding it."""
        buf = self._buf
        if self._state is _DISCARD:
            available = len(buf) - self._pos
            if available >= self._discard_left:
                self._pos += self._discard_left
                self._discard_left = 0
            else:
                self._discard_left -= available
                self._drop_buffered()
        elif self._state is _SKIP:
            newline = buf.find(b"\n", self._pos)
            if newline < 0:
                self._drop_buffered()
            else:
                self._pos = newline + 1
                self._state = _LINES

    def _discard_then_raise(self, count: int, error: ProtocolError, *,
                            answer_first: bool = False) -> None:
        """Swallow the next ``count`` bytes and raise ``error``: once they are
        swallowed (now, if they are here), or at once with ``answer_first``."""
        self._state = _DISCARD
        self._discard_left = count
        self._error = None if answer_first else error
        self._drop()
        if not self._discard_left:
            self._state = _LINES
            self._error = None
            raise error
        if answer_first:
            raise error

    def _die(self, reply: bytes) -> None:
        self._state = _DEAD
        self._error = ProtocolError(reply, close=True)
        self._drop_buffered()
        raise self._error

    def _take_block(self, queue: bytes, flags: int, exptime: int, size: int, noreply: bool,
                    options: tuple | None = None) -> Set | None:
        """Build the Set once its data block and ``\\r\\n`` are all here."""
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < size + 2:
            if self._state is not _BLOCK:
                self._state = _BLOCK
                self._block = (queue, flags, exptime, size, noreply, options)
            return self._read_eof() if self._eof else None
        self._state = _LINES
        self._block = None
        end = pos + size
        if buf[end] != 13 or buf[end + 1] != 10:
            # Resynchronise at the next newline from the end of the declared
            # block: that is where the real end of the client's block is.
            self._pos = end
            self._state = _SKIP
            raise ProtocolError(None if noreply else BAD_DATA_CHUNK)
        self._pos = end + 2
        if size <= _SMALL_BLOCK:
            data = bytes(buf[pos:end])
        else:
            # One copy instead of two (slice, then bytes); the view is
            # released before the buffer can be resized again.
            with memoryview(buf) as view:
                data = bytes(view[pos:end])
        if options is not None:
            return Set(queue, flags, exptime, data, noreply, *options)
        return Set(queue, flags, exptime, data, noreply)

    # -- command handlers: (parser, tokens) -> Command | None ---------------

    def _set(self, tokens: list[bytes]) -> Set | None:
        count = len(tokens)
        noreply = count == 6 and tokens[5] == _NOREPLY
        if count != 5 and not noreply:
            raise _bad_format(tokens)
        queue, flags_token, exptime_token, size_token = tokens[1], tokens[2], tokens[3], tokens[4]
        if (  # the common case, without a call per field
            flags_token.isdigit()
            and exptime_token.isdigit()
            and size_token.isdigit()
            and len(flags_token) <= 10
            and len(exptime_token) <= 18  # < 10**18: fits in 63 bits
            and len(size_token) <= 18
        ):
            flags_value = int(flags_token)
            flags: int | None = flags_value if flags_value <= _MAX_U32 else None
            exptime: int | None = int(exptime_token)
            size: int | None = int(size_token)
        else:
            flags = _unsigned(flags_token, _MAX_U32)
            exptime = _signed64(exptime_token)
            size = _unsigned(size_token, _MAX_I64)
        if flags is None or exptime is None or size is None:
            raise _bad_format(tokens)
        options = None
        known = self._set_names.get(queue)
        if known is not None:
            queue = known
        elif is_plain_queue_name(queue):
            _remember(self._set_names, queue, queue)
        elif b"/" in queue:  # set options (delay, unique): see parse_set_key
            try:
                queue, *options = parse_set_key(queue)
            except ProtocolError as error:
                self._discard_then_raise(size + 2, ProtocolError(None if noreply else error.reply))
                return None
        else:
            # The block's length is known: swallow it, so its bytes are never
            # read as commands (a block saying "delete q" must not run).
            reply = queue_name_error(queue)
            self._discard_then_raise(size + 2, ProtocolError(None if noreply else reply))
            return None
        if size > self._max_item_size:
            if size > MAX_SANE_BLOCK:  # no client means that: do not read it
                self._die(TOO_LARGE)
            # Answered at once (memcached's behaviour), the block dropped as it comes.
            self._discard_then_raise(size + 2, ProtocolError(None if noreply else TOO_LARGE),
                                     answer_first=True)
            return None
        buf = self._buf
        pos = self._pos
        end = pos + size
        if options is not None:
            return self._take_block(queue, flags, exptime, size, noreply, tuple(options))
        if len(buf) >= end + 2 and buf[end] == 13 and buf[end + 1] == 10 and size <= _SMALL_BLOCK:
            self._pos = end + 2  # block already here, and well ended: the fast path
            return Set(queue, flags, exptime, bytes(buf[pos:end]), noreply)
        return self._take_block(queue, flags, exptime, size, noreply)

    def _get(self, tokens: list[bytes]) -> Get:
        if len(tokens) == 1:
            raise ProtocolError(ERROR)
        return Get(tuple([parse_get_key(raw) for raw in tokens[1:]]))

    def _gets(self, tokens: list[bytes]) -> Get:
        if len(tokens) == 1:
            raise ProtocolError(ERROR)
        return Get(tuple([parse_get_key(raw) for raw in tokens[1:]]), cas=True)

    def _delete(self, tokens: list[bytes]) -> Delete:
        # delete <q> [<time>] [noreply]; the time is accepted and ignored.
        count = len(tokens)
        noreply = tokens[-1] == _NOREPLY and count > 2
        fields = count - noreply
        if fields == 3:
            if _unsigned(tokens[2], _MAX_I64) is None:
                raise _bad_format(tokens)
        elif fields != 2:
            raise _bad_format(tokens)
        return Delete(check_queue_name(tokens[1], noreply=noreply), noreply)

    def _flush(self, tokens: list[bytes]) -> Flush:
        if len(tokens) != 2:
            raise _bad_format(tokens)
        return Flush(check_queue_name(tokens[1]))

    def _flush_all(self, tokens: list[bytes]) -> FlushAll:
        count = len(tokens)
        noreply = tokens[-1] == _NOREPLY and count > 1
        fields = count - noreply
        delay = 0
        if fields == 2:
            value = _unsigned(tokens[1], _MAX_I64)
            if value is None:
                raise _bad_format(tokens)
            delay = value
        elif fields != 1:
            raise _bad_format(tokens)
        return FlushAll(delay, noreply)

    def _stats(self, tokens: list[bytes]) -> Stats:
        if len(tokens) > 2:
            raise ProtocolError(BAD_FORMAT)
        return Stats(tokens[1] if len(tokens) == 2 else None)

    def _verbosity(self, tokens: list[bytes]) -> Verbosity:
        count = len(tokens)
        noreply = count == 3 and tokens[2] == _NOREPLY
        level = _unsigned(tokens[1], _MAX_U32) if count == 2 or noreply else None
        if level is None:
            raise _bad_format(tokens)
        return Verbosity(level, noreply)

    def _version(self, tokens: list[bytes]) -> Version:
        if len(tokens) != 1:
            raise ProtocolError(BAD_FORMAT)
        return Version()

    def _quit(self, tokens: list[bytes]) -> Quit:
        if len(tokens) != 1:
            raise ProtocolError(BAD_FORMAT)
        return Quit()

    def _shutdown(self, tokens: list[bytes]) -> Shutdown:
        if len(tokens) != 1:
            raise ProtocolError(BAD_FORMAT)
        return Shutdown()

    def _refuse_storage(self, tokens: list[bytes]) -> None:
        """add/replace/append/prepend/cas: swallow the block, then refuse."""
        fields = 6 if tokens[0] == b"cas" else 5
        count = len(tokens)
        noreply = count == fields + 1 and tokens[-1] == _NOREPLY
        if count != fields and not noreply:
            raise _bad_format(tokens)
        numbers_ok = (
            _unsigned(tokens[2], _MAX_U32) is not None
            and _signed64(tokens[3]) is not None
            and (fields == 5 or _unsigned(tokens[5], 2**64 - 1) is not None)
        )
        size = _unsigned(tokens[4], _MAX_I64)
        if not numbers_ok or size is None:
            raise _bad_format(tokens)
        self._discard_then_raise(size + 2, ProtocolError(None if noreply else NOT_SUPPORTED))

    def _refuse_simple(self, tokens: list[bytes]) -> None:
        """incr/decr/touch (``<key> <number> [noreply]``): refuse, no block."""
        count = len(tokens)
        noreply = count == 4 and tokens[3] == _NOREPLY
        if count != 3 and not noreply:
            raise _bad_format(tokens)
        raise ProtocolError(None if noreply else NOT_SUPPORTED)


_READERS: dict[State, Callable[[Parser], Command | None]] = {
    _BLOCK: Parser._read_block,
    _DISCARD: Parser._read_dropped,
    _SKIP: Parser._read_dropped,
    _DEAD: Parser._read_dead,
    _CLOSED: Parser._read_closed,
}

_HANDLERS: dict[bytes, Callable[[Parser, list[bytes]], Command | None]] = {
    b"get": Parser._get,
    b"gets": Parser._gets,
    b"set": Parser._set,
    b"delete": Parser._delete,
    b"flush": Parser._flush,
    b"flush_all": Parser._flush_all,
    b"stats": Parser._stats,
    b"version": Parser._version,
    b"verbosity": Parser._verbosity,
    b"quit": Parser._quit,
    b"shutdown": Parser._shutdown,
    b"add": Parser._refuse_storage,
    b"replace": Parser._refuse_storage,
    b"append": Parser._refuse_storage,
    b"prepend": Parser._refuse_storage,
    b"cas": Parser._refuse_storage,
    b"incr": Parser._refuse_simple,
    b"decr": Parser._refuse_simple,
    b"touch": Parser._refuse_simple,
}
