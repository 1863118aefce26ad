"""Exponential back-off: the one implementation behind every "wait longer
after each failure" in the project (the worker loop while the queue server
is down, the client's polling fallback, restarting dead processes).

Pure logic: nothing here sleeps or reads a clock, so callers pick trio or
time and tests need neither.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field


def exponential_delay(failures: int, initial: float, maximum: float) -> float:
    """The delay after the ``failures``-th failure in a row (1 for the
    first): ``initial`` doubling each time, at most ``maximum``."""
    if failures < 1:
        raise ValueError(f"failures counts from 1, got {failures}")
    return min(maximum, initial * 2.0 ** min(failures - 1, 1023))


def jittered(delay: float, spread: float, rng: random.Random | None = None) -> float:
    """``delay`` less a random part of up to ``spread`` (0..1) of it, so that
    many clients failing together do not all come back at the same moment."""
    if not 0 <= spread <= 1:
        raise ValueError(f"spread must be 0..1, got {spread}")
    return delay * (1 - spread * (rng or random).random())


@dataclass
class Backoff:
    """Delays that start at ``initial`` and double after every failure, up
    to ``maximum``; :meth:`reset` after a success starts over."""

    initial: float
    maximum: float
    _failures: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {self.initial}, {self.maximum}")

    def next_delay(self) -> float:
        """The delay to wait now; the following one doubles."""
        self._failures += 1
        return exponential_delay(self._failures, self.initial, self.maximum)

    def reset(self) -> None:
        self._failures = 0


@dataclass
class RestartPolicy:
    """When to restart a process that died: :class:`Backoff` delays, and the
    crash-loop rule that gives up on a process that keeps dying.

    A process that stayed up longer than ``maximum`` (a healthy run) resets
    the delay. When more than ``loop_restarts`` deaths fall within
    ``loop_window`` seconds the process is in a crash loop: ``next_delay``
    returns None and the caller gives up and reports it.
    """

    initial: float = 0.5
    maximum: float = 30.0
    loop_restarts: int = 5
    loop_window: float = 60.0
    _backoff: Backoff = field(init=False)
    _deaths: deque = field(default_factory=deque, init=False)

    def __post_init__(self) -> None:
        self._backoff = Backoff(self.initial, self.maximum)

    def next_delay(self, started_at: float, died_at: float) -> float | None:
        """Seconds to wait before restarting, or None for a crash loop."""
        if died_at - started_at > self.maximum:
            self._backoff.reset()  # it ran well: forget earlier trouble
        self._deaths.append(died_at)
        while self._deaths and died_at - self._deaths[0] > self.loop_window:
            self._deaths.popleft()
        if len(self._deaths) > self.loop_restarts:
            return None
        return self._backoff.next_delay()

    def reset(self) -> None:
        """Forget all deaths (after an operator's explicit restart)."""
        self._backoff.reset()
        self._deaths.clear()
