"""The exceptions the client raises on purpose.

Every one derives from :class:`ClientError`, so a web view can catch the
whole family in one clause; anything else escaping the client is a bug.
"""

from __future__ import annotations


class ClientError(Exception):
    """Base of every error the starlingpy client raises."""


class NotStored(ClientError):
    """The server refused a ``set`` with ``NOT_STORED``: the queue is full.

    It is back-pressure, not a failure of the server, so it is raised at
    once rather than retried on another server.
    """


class ServerUnavailable(ClientError):
    """No server could be asked: all are dead, timed out or in back-off.

    For ``set`` it is raised after the bounded retries, so the caller always
    learns that its message was not stored.
    """


class ConfirmFailed(ServerUnavailable):
    """A reliable read's ``/close`` did not reach the server.

    The server puts the item back at the head of its queue when the
    connection drops, so the message will be delivered again (at-least-once).
    """


class UnsupportedFeature(ClientError):
    """The server lacks an extension the call needs (e.g. reliable reads on
    a Ruby Starling 0.10 server); the call never silently does something else."""


class ServerError(ClientError):
    """The server answered with ``ERROR``, ``CLIENT_ERROR`` or ``SERVER_ERROR``
    (for example ``object too large for cache``). The connection is healthy;
    retrying the same request would get the same answer."""


class InvalidQueueName(ClientError, ValueError):
    """A queue name the protocol cannot carry (empty, whitespace, control
    bytes, a reserved character ``/ | + ~``, or a key over 250 bytes)."""
