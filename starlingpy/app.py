"""Start-up and shutdown of one server process, in order: logging, detach,
privileges, load every journal (before any connection is accepted), pid
file, serve until SIGTERM/SIGINT/`shutdown`, close the journals."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import resource
import sys
from functools import partial

import trio

from starlingpy.config import Config, ServerConfig
from starlingpy.journal import SyncPolicy
from starlingpy.journal.store import MAX_OPEN_JOURNALS, JournalStore, StartupError
from starlingpy.process.daemon import daemonize, reporter
from starlingpy.process.pidfile import PidFileError, claim_pid_file, release_pid_file
from starlingpy.security import SecurityConfigError, open_security
from starlingpy.store import StoreError
from starlingpy.tcp import ListenError, QueueServer

log = logging.getLogger("starlingpy")


def setup_logging(server: ServerConfig) -> None:
    level = logging.WARNING - 10 * (server.verbose + 1)  # default INFO, -v DEBUG
    handler = logging.FileHandler(server.log) if server.log else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.DEBUG))


def drop_privileges(user: str | None, group: str | None) -> None:
    if group:
        os.setgid(grp.getgrnam(group).gr_gid)
    if user:
        entry = pwd.getpwnam(user)
        if not group:
            os.setgid(entry.pw_gid)
        os.initgroups(user, os.getgid())
        os.setuid(entry.pw_uid)


def start_server(config: Config) -> int:
    """Run a server to completion; the process exit status."""
    settings = config.server
    notify = daemonize(settings.log) if settings.daemonize else None
    if notify is None and settings.ready_fd is not None:
        notify = reporter(settings.ready_fd)  # a supervisor waits on it
    setup_logging(settings)

    def fail(message: str) -> int:
        log.error("%s", message)
        if notify:
            notify(message)
        else:
            print(f"starlingpy: {message}", file=sys.stderr)
        return 1

    try:
        sync = SyncPolicy.parse(config.store.sync)
    except ValueError:
        return fail(f"bad sync policy {config.store.sync!r}: use always, never or a period in ms")
    try:
        drop_privileges(settings.user, settings.group)
    except (KeyError, PermissionError) as error:
        return fail(f"cannot switch to user {settings.user!r} / group {settings.group!r}: {error}")
    try:
        auth, tls = open_security(settings)
    except SecurityConfigError as error:
        return fail(str(error))
    try:
        connections, journals = fit_descriptors(settings.max_connections)
        if config.store.kind == "postgresql":
            from starlingpy.store.postgres import open_configured
            store = open_configured(config, settings.port)
        else:
            store = JournalStore.open(
                config.store.queue_path, sync=sync, default_limits=config.default_limits,
                limits_by_name=config.limits_by_name, max_journal_size=config.store.max_journal_size,
                max_queues=config.store.max_queues or None, max_open_journals=journals,
                file_mode=config.store.file_mode)
    except (StartupError, StoreError) as error:
        return fail(str(error))
    try:
        if settings.pid:
            claim_pid_file(settings.pid)
        server = QueueServer(
            store, max_connections=connections, max_line=settings.max_line,
            max_item_size=settings.max_item_size, idle_timeout=settings.timeout,
            enable_shutdown=settings.enable_shutdown,
            flush_all_empties=settings.flush_all_empties, auth=auth, tls=tls)

        def announce(address: tuple) -> None:
            line = f"listening on {settings.host}:{address[1]}\n"
            where = (config.store.url if config.store.kind == "postgresql"
                     else f"{config.store.queue_path}, sync {config.store.sync}")
            log.info("%s (%s store: %s)", line.strip(), config.store.kind, where)
            sys.stdout.write(line)
            sys.stdout.flush()
            if notify:
                notify(None, line)

        run = partial(server.serve, settings.host, settings.port, handle_signals=True,
                      task_status=_Announcer(announce))
        if settings.metrics:  # the Prometheus endpoint beside the server
            from starlingpy import metrics
            exporter = metrics.ServerMetrics(store.statistics, lambda: server.counters,
                                             settings.metrics_queues)
            store.observe_syncs(exporter.observe_sync)
            run = partial(metrics.serve_beside, run, settings.metrics, exporter)
        trio.run(run)
    except (PidFileError, ListenError) as error:
        return fail(str(error))
    finally:
        store.close()
        if settings.pid:
            release_pid_file(settings.pid)
    return 0


SPARE_DESCRIPTORS = 64  # the listener, epoll, log files, worker threads' files, a margin


def fit_descriptors(max_connections: int) -> tuple[int, int]:
    """``(connections, open journals)`` that fit, together, under the
    process's descriptor limit: the soft limit is raised toward the hard one
    where needed; if that is not enough, connections are lowered (logged)."""
    want = max_connections + MAX_OPEN_JOURNALS + SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as error:
            log.warning("cannot raise the descriptor limit from %d: %s", soft, error)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return max_connections, MAX_OPEN_JOURNALS
    usable = max(soft - SPARE_DESCRIPTORS, 8)
    journals = max(4, min(MAX_OPEN_JOURNALS, usable // 4))
    connections = max(1, min(max_connections, usable - journals))
    log.warning("descriptor limit %d: serving at most %d connections (asked for %d) with at "
                "most %d journals open at once", soft, connections, max_connections, journals)
    return connections, journals


class _Announcer:
    """A task_status that reports the bound address instead of a nursery."""

    def __init__(self, callback) -> None:
        self.started = callback
