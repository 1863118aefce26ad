"""The starlingpy benchmark (`make bench`, `python -m bench`).

It drives a real `starlingpy serve` over loopback and, in the same run, the
Redis already running on 127.0.0.1:6379 (RPUSH/LPOP on one list), and prints
one table: throughput, latency and the server's CPU time per 100k operations,
each beside Redis's and the targets of issue 2 ("Speed and memory").

Modules, one job each:

- ``wire``      request bytes and reply scanning, memcache text and RESP
- ``loadgen``   many connections multiplexed in one thread with ``selectors``
- ``procstat``  a process's CPU seconds and RSS from ``/proc``
- ``peers``     the two servers under test: start/stop, pid, queue depth
- ``scenarios`` the workloads (set, get, mixed, pipelined, sync policy)
- ``replay``    journal replay: time to first ``get`` after a restart, RSS
- ``report``    the targets, the printed table and the JSON file
- ``profile``   ``--profile``: py-spy on the server during each scenario
- ``cpuprofile``  ``python -m bench.cpuprofile SCENARIO``: cProfile, per operation
"""
