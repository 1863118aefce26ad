"""Start-up and shutdown of one server process, in order: logging, detach,
privileges, load every journal (before any connection is accepted), pid
file, serve until SIGTERM/SIGINT/`shutdown`, close the journals."""

from __future__ import annotations

import logging
import sys
from functools import partial

import trio

from starlingpy.cli.serve import drop_privileges, setup_logging
from starlingpy.collection import QueueCollection, StartupError
from starlingpy.config import Config
from starlingpy.daemon import daemonize
from starlingpy.journal import SyncPolicy
from starlingpy.pidfile import PidFileError
from starlingpy.pidfile import claim_pid_file as write_pidfile
from starlingpy.pidfile import release_pid_file as remove_pidfile
from starlingpy.tcp import ListenError, QueueServer

log = logging.getLogger("starlingpy")


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
        collection = QueueCollection.open(
            settings.queue_path, sync=sync, default_limits=config.default_limits,
            limits_by_name=config.limits_by_name, max_journal_size=settings.max_journal_size)
    except StartupError as error:
        return fail(str(error))
    try:
        if settings.pid:
            write_pidfile(settings.pid)
        server = QueueServer(
            collection, max_connections=settings.max_connections, max_line=settings.max_line,
            max_item_size=settings.max_item_size, idle_timeout=settings.timeout,
            sync_always=sync.mode == "always", enable_shutdown=settings.enable_shutdown,
            flush_all_empties=settings.flush_all_empties)

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
            remove_pidfile(settings.pid)
    return 0


class _Announcer:
    """A task_status that reports the bound address instead of a nursery."""

    def __init__(self, callback) -> None:
        self.started = callback
