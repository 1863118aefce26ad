"""Start-up and shutdown of one server process, in order: logging, detach,
privileges, load every journal (before any connection is accepted), pid
file, serve until SIGTERM/SIGINT/`shutdown`, close the journals."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import sys
from functools import partial

import trio

from starlingpy.collection import QueueCollection, StartupError
from starlingpy.config import Config, ServerConfig
from starlingpy.daemon import daemonize
from starlingpy.journal import SyncPolicy
from starlingpy.pidfile import PidFileError, claim_pid_file, release_pid_file
from starlingpy.security import SecurityConfigError, open_security
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
    setup_logging(settings)

    def fail(message: str) -> int:
        log.error("%s", message)
        if notify:
            notify(message)
        else:
            print(f"starlingpy: {message}", file=sys.stderr)
        return 1

    try:
        sync = SyncPolicy.parse(settings.sync)
    except ValueError:
        return fail(f"bad sync policy {settings.sync!r}: use always, never or a period in ms")
    try:
        drop_privileges(settings.user, settings.group)
    except (KeyError, PermissionError) as error:
        return fail(f"cannot switch to user {settings.user!r} / group {settings.group!r}: {error}")
    try:
        auth, tls = open_security(settings)
    except SecurityConfigError as error:
        return fail(str(error))
    try:
        collection = QueueCollection.open(
            settings.queue_path, sync=sync, default_limits=config.default_limits,
            limits_by_name=config.limits_by_name, max_journal_size=settings.max_journal_size)
    except StartupError as error:
        return fail(str(error))
    try:
        if settings.pid:
            claim_pid_file(settings.pid)
        server = QueueServer(
            collection, max_connections=settings.max_connections, max_line=settings.max_line,
            max_item_size=settings.max_item_size, idle_timeout=settings.timeout,
            sync_always=sync.mode == "always", enable_shutdown=settings.enable_shutdown,
            flush_all_empties=settings.flush_all_empties, auth=auth, tls=tls)

        def announce(address: tuple) -> None:
            line = f"listening on {settings.host}:{address[1]}\n"
            log.info("%s (queues in %s, sync %s)", line.strip(), settings.queue_path, settings.sync)
            sys.stdout.write(line)
            sys.stdout.flush()
            if notify:
                notify(None, line)

        trio.run(partial(server.serve, settings.host, settings.port, handle_signals=True,
                         task_status=_Announcer(announce)))
    except (PidFileError, ListenError) as error:
        return fail(str(error))
    finally:
        collection.close()
        if settings.pid:
            release_pid_file(settings.pid)
    return 0


class _Announcer:
    """A task_status that reports the bound address instead of a nursery."""

    def __init__(self, callback) -> None:
        self.started = callback
