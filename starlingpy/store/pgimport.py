"""`starlingpy store import --from DIR`: a journal spool (ours, or Ruby
Starling's, which the journal store takes over as it opens the directory)
copied into a PostgreSQL store, every queue in order.

The spool is read by the journal store itself (the one reader of the
format), so open transactions are back at their heads, as a restarted
server would have them. Each queue is copied in one transaction that also
records it in ``starling_imported`` (under the spool's path and the queue's
name): a second run skips what the first copied, and an interrupted run
copies a queue whole or not at all. Items set into the spool after a queue
was imported are not copied again: stop the journal server first.
"""

from __future__ import annotations

from pathlib import Path

from ..blocks import ItemRun, thaw
from ..journal import SyncPolicy
from ..journal.store import JournalStore
from .interface import StoreError
from .postgres import HELD_UNSUPPORTED, _Connections, _count, create_schema, libpq_url


def import_spool(url: str, directory: str | Path, schema: str | None = None) -> dict[bytes, int | None]:
    """Copy every queue of the spool in ``directory``: items copied by queue
    name (None: copied by an earlier run)."""
    directory = Path(directory).resolve()
    spool = JournalStore.open(directory, sync=SyncPolicy.parse("always"))
    connections = _Connections(libpq_url(url), 1, schema, "starlingpy import")
    try:
        held = {name: len(spool.get(name).snapshot()[2]) for name in spool.names()}
        if any(held.values()):  # refuse before copying anything, rather than lose their delays
            name = next(name for name, count in held.items() if count)
            raise StoreError(HELD_UNSUPPORTED, (
                f"queue {name.decode(errors='replace')!r} holds {held[name]} delayed or unique "
                f"items, which the PostgreSQL store does not have yet: nothing imported"))
        connections.run_now(create_schema, schema)
        copied: dict[bytes, int | None] = {}
        for name in spool.names():
            _, entries, _ = spool.get(name).snapshot()
            items = [item for entry in entries
                     for item in (thaw(entry) if entry.__class__ is ItemRun else (entry,))]
            copied[name] = connections.run_now(_copy_queue, f"{directory}:{name.hex()}", name, items)
        return copied
    finally:
        connections.close()
        spool.close()


def _copy_queue(conn, source: str, name: bytes, items: list) -> int | None:
    with conn.transaction():
        claimed = conn.execute("INSERT INTO starling_imported (source, records) VALUES (%s, %s)"
                               " ON CONFLICT DO NOTHING", (source, len(items))).rowcount
        if not claimed:
            return None
        conn.execute("INSERT INTO starling_queues (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,))
        _count(conn.cursor(), "import", [(name, len(items), 0)])
        with conn.cursor().copy("COPY starling_items (queue, data, flags, expiry, added)"
                                " FROM STDIN") as copy:
            for data, flags, expiry, added in items:
                copy.write_row((name, data, flags, expiry, added))
    return len(items)
