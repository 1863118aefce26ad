"""`starlingpy work --metrics`: a real pool of worker processes reports its
messages through the parent, scraped and parsed with prometheus_client."""

from __future__ import annotations

import re
import signal
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.support import wait_until
from tests.worker.test_processes import WorkerProcess

_URL = re.compile(rb"metrics on (http://\S+)")
POOL = (("pool", "tests.worker.sample_tasks"),)  # `starlingpy work` names its pool by module


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def messages(samples: dict, task: str, outcome: str) -> float:
    return samples.get(("starlingpy_worker_messages_total", (("outcome", outcome), ("task", task))), 0)


def test_pool_metrics_sum_every_worker_process(server, client, marks, tasks):  # noqa: F811
    pool = WorkerProcess(server, marks, "--instances", "2", "--queues", "slow,fast",
                         "--metrics", "127.0.0.1:0")
    try:
        url = wait_until(lambda: _URL.search(pool.log), timeout=30, message="the metrics URL").group(1).decode()
        wait_until(lambda: scrape(url).get(("starlingpy_pool_workers_alive", POOL)) == 2, timeout=30,
                   message="two workers alive")
        for tag in ("p1", "p2"):  # one in each process at once
            tasks.get("hold").push(tag)
        wait_until(lambda: len({m.name for m in marks.iterdir() if m.name.startswith("started-p")}) == 2,
                   timeout=30, message="both holds running")
        for tag in ("p1", "p2"):
            (marks / f"release-{tag}").touch()
        for n in range(6):
            tasks.get("note").push(f"m{n}")
        tasks.get("explode").push("x")  # max_attempts=2: one retry, then the failure queue
        client.set("fast", b"not a task message")  # rejected: undecodable
        wait_until(lambda: client.sizeof("failed") == 2, timeout=30, message="both failures")

        def settled():
            samples = scrape(url)
            done = messages(samples, "note", "succeeded") == 6 and messages(samples, "hold", "succeeded") == 2
            return samples if done else None

        samples = wait_until(settled, timeout=30, message="six notes and two holds counted")
        assert messages(samples, "explode", "retried") == 1
        assert messages(samples, "explode", "failed") == 1
        assert messages(samples, "(unknown)", "rejected") == 1
        assert samples[("starlingpy_worker_task_seconds_count", (("task", "note"),))] == 6
        assert samples[("starlingpy_worker_task_seconds_count", (("task", "explode"),))] == 2
        assert samples[("starlingpy_pool_workers", POOL)] == 2
        # Counted in two processes, summed by the parent.
        assert len({m.name.rsplit("-", 1)[1] for m in marks.iterdir() if m.name.startswith("done-p")}) == 2
    finally:
        pool.signal(signal.SIGTERM)
        assert pool.wait() == 0, pool.log.decode()


def test_bad_metrics_address_is_a_usage_error(server, marks):  # noqa: F811
    pool = WorkerProcess(server, marks, "--instances", "1", "--metrics", "nowhere")
    assert pool.wait() == 2
    assert b"--metrics nowhere: server address must be host:port" in pool.log
