"""Storage behind one boundary: the :class:`Store` interface, and the stores
that keep queues in this process (:mod:`.local`, :mod:`.memory`). The journal
store is :class:`starlingpy.journal.store.JournalStore`."""

from .interface import Answer, Pending, Store, StoreError

__all__ = ["Answer", "Pending", "Store", "StoreError"]
