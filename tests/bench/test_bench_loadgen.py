"""The load generator against the real Redis: counts, patterns, edge cases."""

from __future__ import annotations

import pytest

from bench.loadgen import fill, run_load
from bench.peers import RedisPeer
from bench.scenarios import VALUE


@pytest.fixture
def redis():
    peer = RedisPeer()
    peer.clear()
    yield peer
    peer.clear()


@pytest.mark.parametrize("depth", [1, 32])
def test_every_operation_is_answered_and_timed(redis, depth) -> None:
    result = run_load(redis.address, redis.wire, [redis.wire.set_request(redis.queue, VALUE)],
                      connections=8, depth=depth, total_ops=1003, time_limit=60)
    assert result.ops == 1003 == len(result.latencies)
    assert dict(result.kinds) == {"stored": 1003}
    assert not result.timed_out
    assert redis.depth() == 1003
    assert 0 < result.percentile_us(0.5) <= result.percentile_us(0.99)


def test_a_mixed_pattern_alternates_per_connection(redis) -> None:
    fill(redis.address, redis.wire, redis.queue, VALUE, 100)
    pattern = [redis.wire.set_request(redis.queue, VALUE), redis.wire.get_request(redis.queue)]
    result = run_load(redis.address, redis.wire, pattern, connections=4, depth=1, total_ops=400,
                      time_limit=60)
    # Each connection does its 100 ops half sets, half gets; the backlog means no get misses.
    assert dict(result.kinds) == {"stored": 200, "hit": 200}
    assert redis.depth() == 100


def test_fewer_operations_than_connections(redis) -> None:
    result = run_load(redis.address, redis.wire, [redis.wire.get_request(redis.queue)],
                      connections=8, depth=32, total_ops=3, time_limit=60)
    assert dict(result.kinds) == {"miss": 3}  # an empty list: LPOP answers nil
    assert not result.timed_out


def test_the_time_limit_stops_issuing_and_drains(redis) -> None:
    result = run_load(redis.address, redis.wire, [redis.wire.set_request(redis.queue, VALUE)],
                      connections=2, depth=4, total_ops=10**9, time_limit=0.2)
    assert result.timed_out
    assert 0 < result.ops < 10**9
    assert redis.depth() == result.ops  # everything issued was answered before returning
