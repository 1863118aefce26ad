"""When to restart a process that died: exponential back-off, and the
crash-loop rule that stops restarting a process that keeps dying.

Pure logic over timestamps the caller passes in, so it is tested without
clocks or processes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class RestartPolicy:
    """Decides the delay before each restart of one process.

    The delay starts at ``initial`` and doubles after every death, up to
    ``maximum``. A process that stayed up longer than ``maximum`` (a healthy
    run) resets the delay. When more than ``loop_restarts`` deaths fall
    within ``loop_window`` seconds the process is in a crash loop:
    ``next_delay`` returns None and the caller gives up and reports it.
    """

    initial: float = 0.5
    maximum: float = 30.0
    loop_restarts: int = 5
    loop_window: float = 60.0
    _delay: float = field(default=0.0, init=False)
    _deaths: deque = field(default_factory=deque, init=False)

    def next_delay(self, started_at: float, died_at: float) -> float | None:
        """Seconds to wait before restarting, or None for a crash loop."""
        if died_at - started_at > self.maximum:
            self._delay = 0.0  # it ran well: forget earlier trouble
        self._deaths.append(died_at)
        while self._deaths and died_at - self._deaths[0] > self.loop_window:
            self._deaths.popleft()
        if len(self._deaths) > self.loop_restarts:
            return None
        self._delay = self.initial if self._delay == 0.0 else min(self._delay * 2, self.maximum)
        return self._delay

    def reset(self) -> None:
        """Forget all deaths (after an operator's explicit restart)."""
        self._delay = 0.0
        self._deaths.clear()
