"""The one exception the protocol layer raises on purpose."""

from __future__ import annotations


class ProtocolError(Exception):
    """A client sent something the protocol refuses.

    ``reply`` is the exact line to send back without its ``\\r\\n`` (``None``
    when the command asked for ``noreply``); ``close`` says whether the
    connection must be closed after sending it.  Any other exception escaping
    the protocol layer is a bug. ``detail`` is for the server's log where
    there is no reply to say it (input cut off by the end of the connection).
    """

    def __init__(self, reply: bytes | None, *, close: bool = False, detail: str | None = None) -> None:
        super().__init__(detail or (reply.decode("latin-1") if reply else "(no reply)"))
        self.reply = reply
        self.close = close
