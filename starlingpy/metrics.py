"""The server's Prometheus endpoint: ``--metrics HOST:PORT``, off by default.

Everything runs in the server's one trio thread. The queues are never read
from another thread (prometheus_client's own HTTP server would do that), so
``/metrics`` is answered by a small trio task here and the exposition is
built on the spot by :class:`ServerCollector` from two callables: the
per-queue statistics snapshot and the server counters.

Bounded labels: a client can create any number of queues, so at most
``max_queues`` of them (the deepest, then by name) get their own ``queue``
label per scrape; the rest are summed under ``queue="(other)"`` and counted
in ``starlingpy_queues_unlabelled``. Counters summed under ``(other)`` may
step down when a queue moves into the labelled set; Prometheus's ``rate``
treats that as a counter reset.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from functools import partial

import trio
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from starlingpy.client.servers import parse_address
from starlingpy.counters import ServerCounters
from starlingpy.queue import QueueStatistics
from starlingpy.tcp import ListenError

log = logging.getLogger("starlingpy.metrics")

OTHER_QUEUES = "(other)"
DEFAULT_MAX_QUEUES = 100
MAX_REQUEST_HEAD = 8 * 1024  # a scrape is one short GET; anything longer is refused
REQUEST_TIMEOUT = 10.0  # seconds a client gets to send its request and read the reply
MAX_SCRAPERS = 16  # connections served at once; more are closed unanswered
# fsync rounds take ~0.25 ms on a quick disk and seconds on a sick one.
SYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0, 2.5, 5.0)

QueueSnapshot = Callable[[], Mapping[bytes, QueueStatistics]]


class ServerCollector:
    """A prometheus_client collector over one server's live state."""

    def __init__(self, queue_stats: QueueSnapshot, counters: Callable[[], ServerCounters],
                 max_queues: int = DEFAULT_MAX_QUEUES) -> None:
        self._queue_stats = queue_stats
        self._counters = counters
        self._max_queues = max_queues

    def collect(self):
        stats = self._queue_stats()
        labelled, rest = split_queues(stats, self._max_queues)
        rows = [(name.decode("utf-8", "backslashreplace"), s) for name, s in labelled]
        if rest:
            rows.append((OTHER_QUEUES, _sum_statistics(rest)))

        def family(kind, name: str, documentation: str, value: Callable[[QueueStatistics], float]):
            metric = kind(name, documentation, labels=["queue"])
            for queue, s in rows:
                metric.add_metric([queue], value(s))
            return metric

        yield family(GaugeMetricFamily, "starlingpy_queue_items", "Items waiting in the queue.",
                     lambda s: s.items)
        yield family(GaugeMetricFamily, "starlingpy_queue_bytes", "Bytes of the items waiting.",
                     lambda s: s.bytes)
        yield family(GaugeMetricFamily, "starlingpy_queue_last_item_age_seconds",
                     "How long the last item taken had waited (Starling's queue age).",
                     lambda s: s.age_ms / 1000)
        yield family(GaugeMetricFamily, "starlingpy_queue_delayed_items",
                     "Items set with /delay= that are not due yet (not in starlingpy_queue_items).",
                     lambda s: s.delayed_items)
        yield family(GaugeMetricFamily, "starlingpy_queue_oldest_item_age_seconds",
                     "How long the item at the head of the queue has waited (0 when empty).",
                     lambda s: s.oldest_age_ms / 1000)
        yield family(GaugeMetricFamily, "starlingpy_queue_open_items",
                     "Items taken with /open and not yet closed or aborted.",
                     lambda s: s.open_transactions)
        yield family(GaugeMetricFamily, "starlingpy_queue_waiters", "Readers parked on the queue.",
                     lambda s: s.waiters)
        yield family(GaugeMetricFamily, "starlingpy_queue_journal_bytes", "Size of the queue's journal.",
                     lambda s: s.logsize)
        yield family(CounterMetricFamily, "starlingpy_queue_items_added",
                     "Items ever added to the queue (since the server started).", lambda s: s.total_items)
        yield family(CounterMetricFamily, "starlingpy_queue_items_expired",
                     "Items dropped because they expired.", lambda s: s.expired_items)
        yield GaugeMetricFamily("starlingpy_queues", "Queues the server holds.", value=len(stats))
        yield GaugeMetricFamily("starlingpy_queues_unlabelled",
                                f"Queues summed under queue={OTHER_QUEUES!r} (label limit).",
                                value=len(rest))
        yield GaugeMetricFamily("starlingpy_journal_bytes", "Size of every journal together.",
                                value=sum(s.logsize for s in stats.values()))
        counters = self._counters()
        yield GaugeMetricFamily("starlingpy_connections", "Client connections open now.",
                                value=counters.curr_connections)
        for name, value, documentation in (
                ("connections_accepted", counters.total_connections, "Connections accepted."),
                ("connections_rejected", counters.rejected_connections,
                 "Connections refused at the max-connections limit."),
                ("cmd_get", counters.cmd_get, "get commands."),
                ("cmd_set", counters.cmd_set, "set commands."),
                ("get_hits", counters.get_hits, "gets that returned an item."),
                ("get_misses", counters.get_misses, "gets that found the queue empty."),
                ("read_bytes", counters.bytes_read, "Bytes read from clients."),
                ("written_bytes", counters.bytes_written, "Bytes written to clients.")):
            yield CounterMetricFamily(f"starlingpy_{name}", documentation, value=value)


def split_queues(stats: Mapping[bytes, QueueStatistics], max_queues: int
                 ) -> tuple[list[tuple[bytes, QueueStatistics]], list[QueueStatistics]]:
    """The ``max_queues`` deepest queues (ties by name), and the others."""
    ranked = sorted(stats.items(), key=lambda pair: (-pair[1].items, pair[0]))
    return ranked[:max_queues], [s for _, s in ranked[max_queues:]]


def _sum_statistics(many: list[QueueStatistics]) -> QueueStatistics:
    return QueueStatistics(
        items=sum(s.items for s in many), total_items=sum(s.total_items for s in many),
        logsize=sum(s.logsize for s in many), expired_items=sum(s.expired_items for s in many),
        age_ms=max(s.age_ms for s in many), bytes=sum(s.bytes for s in many),
        open_transactions=sum(s.open_transactions for s in many),
        waiters=sum(s.waiters for s in many),
        delayed_items=sum(s.delayed_items for s in many),
        oldest_age_ms=max(s.oldest_age_ms for s in many))


class ServerMetrics:
    """The registry for one server: its collector and the sync histogram."""

    def __init__(self, queue_stats: QueueSnapshot, counters: Callable[[], ServerCounters],
                 max_queues: int = DEFAULT_MAX_QUEUES) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServerCollector(queue_stats, counters, max_queues))
        self.sync_seconds = Histogram("starlingpy_journal_sync_seconds",
                                      "Duration of one journal fsync round.",
                                      buckets=SYNC_BUCKETS, registry=self.registry)

    def observe_sync(self, seconds: float) -> None:
        self.sync_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# -- the HTTP side -------------------------------------------------------------

def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + body


async def _read_head(stream: trio.abc.Stream) -> bytes | None:
    """The request up to its blank line, or None if it is too long or cut off."""
    head = bytearray()
    while b"\r\n\r\n" not in head:
        if len(head) > MAX_REQUEST_HEAD:
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        head += chunk
    return bytes(head)


def answer(head: bytes | None, render: Callable[[], bytes]) -> bytes:
    """The whole HTTP response to one request head (None: unreadable)."""
    if head is None:
        return _response("400 Bad Request", b"bad request\n")
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return _response("400 Bad Request", b"bad request\n")
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if target != b"/metrics":
        return _response("404 Not Found", b"try /metrics\n")
    if method not in (b"GET", b"HEAD"):
        return _response("405 Method Not Allowed", b"GET only\n")
    reply = _response("200 OK", render(), CONTENT_TYPE_LATEST)
    return reply.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if method == b"HEAD" else reply


async def serve_metrics(host: str, port: int, render: Callable[[], bytes], *,
                        task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Answer ``GET /metrics`` on host:port until cancelled;
    ``task_status.started((host, port))`` with the bound port."""
    limit = trio.CapacityLimiter(MAX_SCRAPERS)

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                limit.acquire_nowait()
            except trio.WouldBlock:
                return  # too many at once: a scraper retries next interval
            try:
                with trio.move_on_after(REQUEST_TIMEOUT):
                    await stream.send_all(answer(await _read_head(stream), render))
            except (trio.BrokenResourceError, OSError):
                pass  # the scraper went away
            except Exception:  # a bug here must not take the queue server down
                log.exception("metrics request failed")
            finally:
                limit.release()

    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[:2]
    task_status.started(bound)
    await trio.serve_listeners(handle, listeners)


async def serve_beside(main: Callable[[], Awaitable[None]], address: str, metrics: ServerMetrics) -> None:
    """Run ``main`` (the queue server) with the metrics endpoint beside it;
    the endpoint stops when ``main`` returns."""
    try:
        host, port = parse_address(address)
    except ValueError as error:
        raise ListenError(f"--metrics: {error}") from None
    async with trio.open_nursery() as nursery:
        try:
            bound = await nursery.start(partial(serve_metrics, host, port, metrics.render))
        except OSError as error:
            raise ListenError(f"cannot serve metrics on {address}: {error.strerror}") from None
        line = f"metrics on http://{host}:{bound[1]}/metrics\n"
        log.info("%s", line.strip())
        sys.stdout.write(line)  # before "listening on", which tells a starter all is up
        sys.stdout.flush()
        await main()
        nursery.cancel_scope.cancel()
