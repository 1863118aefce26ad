"""Measure journal replay: build a journal of N queued items through the
public API, then time ``JournalStore.open`` in a fresh process and report
its RSS.

    python -m bench.journal_replay [--items 1000000] [--batch 32]
        [--size 100] [--crash] [--mix puts|takes|reliable]

``--batch`` is how many puts go into each ``write_pending`` (one frame each).
``--crash`` abandons the collection instead of closing it (as SIGKILL would),
so replay sees the journal as written, without the compaction a clean close
does. ``--mix takes`` follows every second batch with as many takes (each
written on its own, as unpipelined clients do), ``--mix reliable`` with as
many reliable reads (open, then close); half the items are left.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build(directory: str, items: int, batch: int, size: int, crash: bool, mix: str) -> None:
    from starlingpy.journal import SyncPolicy
    from starlingpy.journal.store import JournalStore

    collection = JournalStore.open(directory, sync=SyncPolicy.parse("never"))
    queue = collection.get_or_create(b"bench")
    value = b"v" * size
    owner = object()
    started = time.perf_counter()
    for first in range(0, items, batch):
        count = min(batch, items - first)
        for _ in range(count):
            queue.put(value, 0, 0)
        collection.commit()
        if mix != "puts" and first // batch % 2:
            for _ in range(count):
                if mix == "takes":
                    queue.take_nowait()
                else:
                    queue.open_nowait(owner)
                    collection.commit()
                    queue.close_open(owner)
                collection.commit()
    took = time.perf_counter() - started
    print(f"built {items} items, {batch} per write_pending: {took:.2f} s "
          f"({took / items * 1e6:.2f} us per put+write_pending share)")
    if crash:
        collection.abandon()
    else:
        started = time.perf_counter()
        collection.close()
        print(f"clean close (incl. compaction): {time.perf_counter() - started:.2f} s")


def measure(directory: str) -> None:
    rss_before = _rss_mb()
    from starlingpy.journal import SyncPolicy
    from starlingpy.journal.store import JournalStore

    started, cpu = time.perf_counter(), time.process_time()
    collection = JournalStore.open(directory, sync=SyncPolicy.parse("never"))
    item = collection.get(b"bench").peek_nowait()
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    stats = collection.statistics()[b"bench"]
    assert item is not None
    print(json.dumps({"open_seconds": round(took, 3), "open_cpu_seconds": round(cpu, 3),"items": stats.items,
                      "rss_mb": round(_rss_mb(), 1), "rss_before_import_mb": round(rss_before, 1),
                      "logsize": stats.logsize}))
    collection.abandon()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--crash", action="store_true")
    parser.add_argument("--mix", choices=("puts", "takes", "reliable"), default="puts")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return
    with tempfile.TemporaryDirectory() as directory:
        build(directory, args.items, args.batch, args.size, args.crash, args.mix)
        # A fresh interpreter, so RSS is that of a server that just started.
        subprocess.run([sys.executable, "-m", "bench.journal_replay",
                        "--measure", directory], check=True, env=dict(os.environ))


if __name__ == "__main__":
    main()
