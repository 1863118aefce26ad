"""Measure the storage share of one unpipelined operation: ``queue.put`` or
``take_nowait`` followed by ``write_pending`` (one frame, one ``writev``), as
the server does per reply, in microseconds (best of several runs).

    python -m bench.storage_hotpath [--ops 20000] [--size 100]

``put+write_pending`` fills the queue (so recent items get sealed into
blocks along the way); ``take+write_pending`` drains it again (blocks are
thawed); ``put+take cycle`` is a queue that stays short, the usual case.
``--no-write`` leaves the system call out, to see the Python share alone.
"""

from __future__ import annotations

import argparse
import tempfile
import timeit


def main() -> None:
    from starlingpy.journal import SyncPolicy
    from starlingpy.journal.store import JournalStore

    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="skip the writev itself")
    args = parser.parse_args()
    value = b"v" * args.size
    ops = args.ops
    with tempfile.TemporaryDirectory() as directory:
        collection = JournalStore.open(directory, sync=SyncPolicy.parse("never"))
        queue = collection.get_or_create(b"hot")
        if args.no_write:
            collection.journal_of(b"hot").file.append = lambda chunks: None
        put, take, write_pending = queue.put, queue.take_nowait, collection.commit

        def puts() -> None:
            for _ in range(ops):
                put(value, 0, 0)
                write_pending()

        def takes() -> None:
            for _ in range(ops):
                take()
                write_pending()

        def cycles() -> None:
            for _ in range(ops):
                put(value, 0, 0)
                write_pending()
                take()
                write_pending()

        # Every run of `puts` is matched by one of `takes`, so each `takes`
        # run finds a full queue.
        fill_and_drain = (("put+write_pending", puts), ("take+write_pending", takes))
        results: dict[str, list[float]] = {name: [] for name, _ in fill_and_drain}
        for _ in range(args.repeat):
            for name, work in fill_and_drain:
                results[name].append(timeit.timeit(work, number=1))
        results["put+take cycle"] = timeit.repeat(cycles, number=1, repeat=args.repeat)
        collection.close()
    for name, times in results.items():
        print(f"{name:20s} {min(times) / ops * 1e6:6.2f} us")


if __name__ == "__main__":
    main()
