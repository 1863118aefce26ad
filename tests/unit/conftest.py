"""An injected wall clock for the storage tests (expiry, age)."""

from __future__ import annotations

import pytest

T0 = 1_800_000_000.0


class Clock:
    """Callable like time.time; tests move ``now`` by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()
