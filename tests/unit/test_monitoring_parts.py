"""The pure parts of monitoring: the metrics endpoint's answers, the label
bound, the config key, and the dashboard's history and rates."""

from __future__ import annotations

from starlingpy.config import parse_config
from starlingpy.dashboard.history import QueueHistory
from starlingpy.metrics import answer, split_queues
from starlingpy.queue import QueueStatistics


def render() -> bytes:
    return b"starlingpy_queues 1.0\n"


def test_answers_get_and_head_of_metrics_only():
    ok = answer(b"GET /metrics?name[]=x HTTP/1.1\r\nHost: a\r\n\r\n", render)
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and ok.endswith(b"\r\n\r\nstarlingpy_queues 1.0\n")
    head = answer(b"HEAD /metrics HTTP/1.0\r\n\r\n", render)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert b"Content-Length: 22\r\n" in head  # the length of the body it did not send
    assert answer(b"GET / HTTP/1.1\r\n\r\n", render).startswith(b"HTTP/1.1 404")
    assert answer(b"DELETE /metrics HTTP/1.1\r\n\r\n", render).startswith(b"HTTP/1.1 405")
    for bad in (None, b"GET /metrics\r\n\r\n", b"GET /metrics SPDY/3\r\n\r\n", b"\r\n\r\n"):
        assert answer(bad, render).startswith(b"HTTP/1.1 400"), bad


def stats(items: int) -> QueueStatistics:
    return QueueStatistics(items=items, total_items=items, logsize=0, expired_items=0, age_ms=0,
                           bytes=0, open_transactions=0, waiters=0)


def test_the_deepest_queues_get_labels_ties_by_name():
    queues = {b"a": stats(1), b"b": stats(5), b"c": stats(5), b"d": stats(0)}
    labelled, rest = split_queues(queues, 2)
    assert [name for name, _ in labelled] == [b"b", b"c"]
    assert sorted(s.items for s in rest) == [0, 1]
    labelled, rest = split_queues(queues, 10)
    assert len(labelled) == 4 and rest == []


def test_metrics_keys_in_the_config_file():
    config = parse_config('[server]\nmetrics = "127.0.0.1:9122"\nmetrics_queues = 7\n')
    assert (config.server.metrics, config.server.metrics_queues) == ("127.0.0.1:9122", 7)
    assert parse_config("").server.metrics is None  # off by default


def sample(items: int, added: int) -> dict[str, str]:
    return {"queue_jobs_items": str(items), "queue_jobs_total_items": str(added), "queue_jobs_logsize": "0"}


def test_history_rates_and_window():
    history = QueueHistory(interval=10, window=40)
    history.add(100, sample(items=0, added=0))
    history.add(110, sample(items=50, added=100))   # 100 in, 50 out in 10 s
    history.add(120, sample(items=30, added=100))   # 20 taken or expired: out
    history.add(130, sample(items=0, added=10))     # the server restarted: no rate
    snapshot = history.snapshot()
    assert snapshot["times"] == [100, 110, 120, 130]
    jobs = snapshot["queues"]["jobs"]
    assert jobs["depth"] == [0, 50, 30, 0]
    assert jobs["rate_in"] == [None, 10.0, 0.0, None]
    assert jobs["rate_out"] == [None, 5.0, 2.0, None]
    # The window holds ceil(40 / 10) = 4 samples.
    history.add(140, sample(items=0, added=10))
    assert history.snapshot()["times"] == [110, 120, 130, 140]


def test_history_keeps_only_the_deepest_queues():
    history = QueueHistory(interval=1, max_queues=2)
    stats_reply = {}
    for name, items in (("a", 1), ("b", 3), ("c", 2)):
        stats_reply.update({f"queue_{name}_items": str(items), f"queue_{name}_logsize": "0"})
    history.add(1, stats_reply)
    assert sorted(history.snapshot()["queues"]) == ["b", "c"]
