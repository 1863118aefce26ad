"""Pluggable serializers; the encoding travels in the item's flags.

Flag values (a reader decodes what a writer encoded, whatever serializer
each side was configured with):

=========  =====  ==============================================================
name       value  meaning
=========  =====  ==============================================================
FLAG_RAW   0      bytes, untouched (also what Ruby Starling always answers)
FLAG_PICKLE 1     a pickle; the same bit as pymemcache's and python-memcached's
FLAG_TEXT  16     UTF-8 text; the same bit as pymemcache's ``FLAG_TEXT``
FLAG_JSON  256    UTF-8 JSON; ours, clear of every bit pymemcache uses
=========  =====  ==============================================================

Any other flag value, and a pickle read by a serializer that was not
explicitly asked to unpickle, is handed back as the raw bytes (the caller
still sees the flags in :class:`Message`). Unpickling data from a queue is
code execution, so only :class:`PickleSerializer` ever does it.
"""

from __future__ import annotations

import json
import logging
import pickle

log = logging.getLogger(__name__)

FLAG_RAW = 0
FLAG_PICKLE = 1 << 0
FLAG_TEXT = 1 << 4
FLAG_JSON = 1 << 8

_BYTES_LIKE = (bytes, bytearray, memoryview)


class Serializer:
    """Interface: ``dumps(value) -> (data, flags)``, ``loads(data, flags) -> value``.

    ``loads`` never raises on foreign or damaged data: it returns ``data``
    unchanged, so an item is never lost to a decoding error after it was
    dequeued.
    """

    def dumps(self, value: object) -> tuple[bytes, int]:
        raise NotImplementedError

    def loads(self, data: bytes, flags: int) -> object:
        raise NotImplementedError


class RawSerializer(Serializer):
    """Bytes in, bytes out; nothing is ever decoded."""

    def dumps(self, value: object) -> tuple[bytes, int]:
        if not isinstance(value, _BYTES_LIKE):
            raise TypeError(f"RawSerializer stores bytes only, got {type(value).__name__}")
        return bytes(value), FLAG_RAW

    def loads(self, data: bytes, flags: int) -> object:
        return data


class JSONSerializer(Serializer):
    """The default: bytes pass through untouched, everything else is JSON."""

    def dumps(self, value: object) -> tuple[bytes, int]:
        if isinstance(value, _BYTES_LIKE):
            return bytes(value), FLAG_RAW
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8"), FLAG_JSON

    def loads(self, data: bytes, flags: int) -> object:
        try:
            if flags == FLAG_JSON:
                return json.loads(data.decode("utf-8"))
            if flags == FLAG_TEXT:
                return data.decode("utf-8")
        except (UnicodeDecodeError, ValueError):
            # Damaged data must not vanish: hand back the bytes, flags intact.
            log.warning("item with flags %d does not decode; returned as bytes", flags)
        return data


class PickleSerializer(JSONSerializer):
    """Explicit opt-in: non-bytes values are pickled, pickles are unpickled.

    Use it only when every writer to the queues is trusted: unpickling runs
    arbitrary code chosen by whoever wrote the item.
    """

    def __init__(self, protocol: int = pickle.DEFAULT_PROTOCOL) -> None:
        self.protocol = protocol

    def dumps(self, value: object) -> tuple[bytes, int]:
        if isinstance(value, _BYTES_LIKE):
            return bytes(value), FLAG_RAW
        return pickle.dumps(value, protocol=self.protocol), FLAG_PICKLE

    def loads(self, data: bytes, flags: int) -> object:
        if flags == FLAG_PICKLE:
            try:
                return pickle.loads(data)
            except Exception:  # any unpickling failure: keep the bytes
                log.warning("pickled item does not unpickle; returned as bytes")
                return data
        return super().loads(data, flags)
