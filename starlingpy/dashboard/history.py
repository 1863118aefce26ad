"""The last hour of each queue's depth and rates, sampled from ``stats``.

A background thread asks the server for ``stats`` every ``interval``
seconds and keeps one sample per interval for ``window`` seconds: per queue,
the items waiting and the running totals of items added and gone (taken or
expired). Rates are differences between neighbouring samples, so a
dashboard opened now shows the whole hour at once.

Bounded: at most ``max_queues`` queues (the deepest at each sample) are
kept per sample, and at most window/interval samples.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

from starlingpy.client.queue_stats import queue_names

log = logging.getLogger("starlingpy.dashboard")

DEFAULT_WINDOW = 3600.0
DEFAULT_MAX_QUEUES = 50


class QueueHistory:
    """Samples in memory; thread-safe (the sampler writes, requests read)."""

    def __init__(self, interval: float, window: float = DEFAULT_WINDOW,
                 max_queues: int = DEFAULT_MAX_QUEUES) -> None:
        self.interval = interval
        self.max_queues = max_queues
        self._samples: deque[tuple[float, dict[str, tuple[int, int, int]]]] = deque(
            maxlen=max(2, math.ceil(window / interval)))
        self._lock = threading.Lock()
        self.error: str | None = None  # why the last sample failed, if it did

    def add(self, now: float, stats: Mapping[str, str]) -> None:
        """One ``stats`` reply: per queue (items, total added, total gone)."""
        queues = {}
        for name in queue_names(stats):
            try:
                items = int(stats[f"queue_{name}_items"])
                added = int(stats.get(f"queue_{name}_total_items", 0))
            except ValueError:
                continue
            # Whatever was added and is no longer waiting has left: taken or expired.
            queues[name] = (items, added, max(0, added - items))
        deepest = sorted(queues, key=lambda q: (-queues[q][0], q))[:self.max_queues]
        with self._lock:
            self._samples.append((now, {q: queues[q] for q in deepest}))
            self.error = None

    def failed(self, error: str) -> None:
        with self._lock:
            self.error = error

    def snapshot(self) -> dict:
        """JSON for the page: sample times, and per queue its depth and its
        in/out rates (per second) at each time (null where it did not exist)."""
        with self._lock:
            samples = list(self._samples)
            error = self.error
        names = sorted({name for _, queues in samples for name in queues})
        times = [t for t, _ in samples]
        result = {}
        for name in names:
            depth, rate_in, rate_out = [], [], []
            previous = None
            for (t, queues) in samples:
                current = queues.get(name)
                depth.append(current[0] if current else None)
                if current and previous and t > previous[0]:
                    span = t - previous[0]
                    # A counter that went down means the server restarted: no rate.
                    rate_in.append(_rate(current[1], previous[1][1], span))
                    rate_out.append(_rate(current[2], previous[1][2], span))
                else:
                    rate_in.append(None)
                    rate_out.append(None)
                previous = (t, current) if current else None
            result[name] = {"depth": depth, "rate_in": rate_in, "rate_out": rate_out}
        return {"interval": self.interval, "times": times, "queues": result, "error": error}


def _rate(now: int, before: int, span: float) -> float | None:
    return round((now - before) / span, 3) if now >= before else None


class Sampler:
    """Calls ``read()`` (a ``stats`` round trip) every interval from a
    daemon thread and feeds the history, until :meth:`stop`."""

    def __init__(self, read: Callable[[], Mapping[str, str]], history: QueueHistory) -> None:
        self._read = read
        self._history = history
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            try:
                self._history.add(time.time(), self._read())
            except Exception as error:  # server down, or a bad reply: show it, try again
                self._history.failed(f"{type(error).__name__}: {error}")
            if self._stopped.wait(self._history.interval):
                return
