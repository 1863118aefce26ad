"""The server's --metrics endpoint, scraped from a real server process and
parsed with prometheus_client's own parser; the numbers must match `stats`."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from starlingpy.client.queue_stats import read_stats
from tests.support import REPO, BlockingClient, ServerProcess, wait_until

_METRICS_URL = re.compile(rb"metrics on (http://\S+)")


def metrics_url(server: ServerProcess) -> str:
    return _METRICS_URL.search(bytes(server.output)).group(1).decode()


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of one scrape."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def by_queue(samples: dict, name: str) -> dict[str, float]:
    return {dict(labels)["queue"]: value for (sample, labels), value in samples.items() if sample == name}


def test_scraped_metrics_match_stats(tmp_path):
    server = ServerProcess(tmp_path / "spool", "--metrics", "127.0.0.1:0", "--metrics-queues", "2",
                           "--sync", "always").start()
    try:
        url = metrics_url(server)
        with BlockingClient(server.address) as client, BlockingClient(server.address) as holder, \
                BlockingClient(server.address) as waiter:
            for queue, count in ((b"deep", 4), (b"middle", 3), (b"small", 2), (b"tiny", 1)):
                for i in range(count):
                    assert client.set(queue, b"item-%d" % i) == b"STORED\r\n"
            assert client.get(b"deep") == b"item-0"
            assert holder.get(b"middle/open") == b"item-0"  # an open item
            waiter.sock.sendall(b"get empty/t=30000\r\n")  # a parked reader
            wait_until(lambda: read_stats(server.address).get("queue_empty_waiters") == "1",
                       message="the reader to park")
            samples = scrape(url)
            stats = read_stats(server.address)

        # The two deepest queues by items get labels (a tie goes by name: middle
        # before small); the rest sum as "(other)".
        items = by_queue(samples, "starlingpy_queue_items")
        assert set(items) == {"deep", "middle", "(other)"}, items
        assert items["deep"] == int(stats["queue_deep_items"]) == 3
        assert items["middle"] == int(stats["queue_middle_items"]) == 2
        others = ("small", "tiny", "empty")
        assert items["(other)"] == sum(int(stats[f"queue_{q}_items"]) for q in others) == 3
        assert samples[("starlingpy_queues_unlabelled", ())] == 3
        assert samples[("starlingpy_queues", ())] == 5
        for metric, field in (("starlingpy_queue_bytes", "bytes"),
                              ("starlingpy_queue_delayed_items", "delayed_items"),
                              ("starlingpy_queue_items_added_total", "total_items"),
                              ("starlingpy_queue_open_items", "open_transactions"),
                              ("starlingpy_queue_waiters", "waiters"),
                              ("starlingpy_queue_journal_bytes", "logsize")):
            values = by_queue(samples, metric)
            for queue in ("deep", "middle"):
                assert values[queue] == int(stats[f"queue_{queue}_{field}"]), (metric, queue)
            assert values["(other)"] == sum(int(stats[f"queue_{q}_{field}"]) for q in others), metric
        oldest = by_queue(samples, "starlingpy_queue_oldest_item_age_seconds")
        assert set(oldest) == {"deep", "middle", "(other)"}
        assert all(0 <= age < 120 for age in oldest.values()), oldest  # seconds since the sets
        assert by_queue(samples, "starlingpy_queue_open_items")["middle"] == 1
        assert by_queue(samples, "starlingpy_queue_waiters")["(other)"] == 1
        assert samples[("starlingpy_cmd_set_total", ())] == int(stats["cmd_set"]) == 10
        assert samples[("starlingpy_cmd_get_total", ())] == int(stats["cmd_get"])
        assert samples[("starlingpy_get_hits_total", ())] == int(stats["get_hits"])
        # stats saw one more connection than the scrape: its own.
        assert samples[("starlingpy_connections", ())] == int(stats["curr_connections"]) - 1 == 3
        assert samples[("starlingpy_journal_bytes", ())] == sum(
            int(stats[f"queue_{q}_logsize"]) for q in ("deep", "middle", "small", "tiny", "empty"))
        # Every acknowledged set under sync=always waited for an fsync round.
        assert samples[("starlingpy_journal_sync_seconds_count", ())] >= 1
    finally:
        server.terminate()


def test_metrics_endpoint_refuses_bad_requests_and_keeps_serving(tmp_path):
    server = ServerProcess(tmp_path / "spool", "--metrics", "127.0.0.1:0").start()
    try:
        url = metrics_url(server)
        host, port = url.split("/")[2].split(":")
        for path, method, status in (("/other", "GET", 404), ("/metrics", "POST", 405)):
            request = urllib.request.Request(f"http://{host}:{port}{path}", method=method)
            try:
                urllib.request.urlopen(request, timeout=10)
                raise AssertionError(f"{method} {path} answered 200")
            except urllib.error.HTTPError as error:
                assert error.code == status
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /" + b"x" * 20000)  # no end of head in sight
            assert sock.recv(100).startswith(b"HTTP/1.1 400")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 400")
        assert ("starlingpy_connections", ()) in scrape(url)  # still serving
        assert server.proc.poll() is None
    finally:
        assert server.terminate() == 0


def test_bad_metrics_address_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "starlingpy", "serve", "-p", "0", "-q",
                             str(tmp_path / "spool"), "--metrics", "nowhere"],
                            cwd=REPO, capture_output=True, timeout=30)
    assert result.returncode == 1
    assert b"--metrics: server address must be host:port" in result.stderr
