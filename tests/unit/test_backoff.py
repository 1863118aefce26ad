"""The one back-off: doubling delays, and the restart policy's crash-loop rule."""

from __future__ import annotations

import pytest

from starlingpy.backoff import Backoff, RestartPolicy


def test_delays_double_up_to_the_maximum_and_reset():
    backoff = Backoff(0.25, 1.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    backoff.reset()
    assert backoff.next_delay() == 0.25


@pytest.mark.parametrize("initial, maximum", [(0, 1), (2, 1), (-1, 1)])
def test_nonsense_bounds_are_refused(initial, maximum):
    with pytest.raises(ValueError):
        Backoff(initial, maximum)


def test_backoff_doubles_up_to_the_maximum_then_declares_a_crash_loop():
    policy = RestartPolicy(initial=0.5, maximum=4.0, loop_restarts=5, loop_window=60.0)
    delays = [policy.next_delay(started_at=t, died_at=t + 0.1) for t in range(5)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.next_delay(started_at=5, died_at=5.1) is None  # 6 deaths within 60 s


def test_backoff_forgets_old_deaths_and_resets_after_a_healthy_run():
    policy = RestartPolicy(initial=1.0, maximum=8.0, loop_restarts=2, loop_window=10.0)
    assert policy.next_delay(0, 1) == 1.0
    assert policy.next_delay(2, 3) == 2.0
    # Ran 50 s (longer than the maximum delay): healthy, so back to the start,
    # and the early deaths are outside the window.
    assert policy.next_delay(3, 53) == 1.0
    assert policy.next_delay(54, 55) == 2.0
    assert policy.next_delay(56, 57) is None
    policy.reset()
    assert policy.next_delay(58, 59) == 1.0
