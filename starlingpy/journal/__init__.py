"""The bytes on disk: record codec, journal files, sync policy, recovery and
the Ruby Starling reader. See :mod:`starlingpy.journal.codec` for the format."""

from .sync import SyncPolicy

__all__ = ["SyncPolicy"]
