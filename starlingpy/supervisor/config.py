"""The supervisor's part of the shared TOML file: ``[supervisor]`` and the
worker pools.

The same file also holds ``[server]`` (read by ``starlingpy serve -f``), so
one file describes the whole background tier::

    [server]
    host = "127.0.0.1"
    port = 22122
    queue_path = "var/spool"

    [supervisor]
    run_dir = "var/run"            # pid files and the state file
    log_dir = "var/log"            # one log file per process
    grace_period = 10.0            # s a worker may finish its message (warm stop)
    backoff_initial = 0.5          # s before the first restart of a dead process
    backoff_max = 30.0             # back-off doubles up to this
    crash_loop_restarts = 5        # this many restarts ...
    crash_loop_window = 60.0       # ... within this many s: stop, report "crash-loop"
    credentials = "credentials.toml"  # login and TLS for the workers and `status`
                                      # (starlingpy.client.security; keep it 0600)

    [pools.graders]
    module = "workers.tasks"       # the task module the workers import
    queues = ["submissions", "regrades"]   # strict priority, first wins
    instances = 4
    directory = ".."               # working directory, also put on PYTHONPATH
    env = { APP_DATABASE_URL = "sqlite:///var/app.db" }

Relative paths resolve against the file's directory. A mistake raises
:class:`starlingpy.config.ConfigError` naming the key and its line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlingpy.config import Config, ConfigError, key_error, load_config

_POOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")


@dataclass(frozen=True)
class PoolConfig:
    """One pool of identical worker processes."""

    name: str
    module: str
    queues: tuple[str, ...]
    instances: int = 1
    directory: Path = Path(".")
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SupervisorSettings:
    """Where files go and how dead processes are restarted."""

    run_dir: Path
    log_dir: Path
    grace_period: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    crash_loop_restarts: int = 5
    crash_loop_window: float = 60.0
    ready_timeout: float = 30.0
    credentials: Path | None = None  # STARLINGPY_CREDENTIALS for the supervisor and its workers


@dataclass(frozen=True)
class TierConfig:
    """The whole file as the supervisor sees it."""

    path: Path
    server_host: str
    server_port: int
    settings: SupervisorSettings
    pools: tuple[PoolConfig, ...]
    shared: Config

    @property
    def server_address(self) -> str:
        return f"{self.server_host}:{self.server_port}"


class _Reader:
    """Typed access to one table, raising errors that name key and line."""

    def __init__(self, path: Path, text: str, table: Any, prefix: str) -> None:
        self.path, self.text, self.prefix = path, text, prefix
        if not isinstance(table, Mapping):
            raise self.error("", "expected a table")
        self.table = table

    def error(self, key: str, problem: str) -> ConfigError:
        return key_error(self.path, self.text, f"{self.prefix}.{key}" if key else self.prefix,
                         problem)

    def check_known(self, known: set[str]) -> None:
        for key in self.table:
            if key not in known:
                raise self.error(key, f"unknown key (expected one of: {', '.join(sorted(known))})")

    def number(self, key: str, default: float, *, integer: bool = False, minimum: float = 0) -> Any:
        value = self.table.get(key, default)
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise self.error(key, f"expected {'an integer' if integer else 'a number'}, "
                                  f"got {type(value).__name__} {value!r}")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        return value

    def string(self, key: str, default: str | None = None) -> str:
        if key not in self.table and default is None:
            raise self.error(key, "is required")
        value = self.table.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a non-empty string, got {value!r}")
        return value

    def file_path(self, key: str, default: str) -> Path:
        value = Path(self.string(key, default))
        return value if value.is_absolute() else (self.path.parent / value)


def _read_settings(path: Path, text: str, raw: Mapping[str, Any]) -> SupervisorSettings:
    r = _Reader(path, text, raw.get("supervisor", {}), "supervisor")
    r.check_known({"run_dir", "log_dir", "grace_period", "backoff_initial", "backoff_max",
                   "crash_loop_restarts", "crash_loop_window", "ready_timeout", "credentials"})
    settings = SupervisorSettings(
        run_dir=r.file_path("run_dir", "var/run").resolve(),
        log_dir=r.file_path("log_dir", "var/log").resolve(),
        grace_period=r.number("grace_period", 10.0),
        backoff_initial=r.number("backoff_initial", 0.5, minimum=0.01),
        backoff_max=r.number("backoff_max", 30.0, minimum=0.01),
        crash_loop_restarts=r.number("crash_loop_restarts", 5, integer=True, minimum=1),
        crash_loop_window=r.number("crash_loop_window", 60.0, minimum=0.01),
        ready_timeout=r.number("ready_timeout", 30.0, minimum=0.1),
        credentials=r.file_path("credentials", "-").resolve() if "credentials" in r.table else None,
    )
    if settings.backoff_max < settings.backoff_initial:
        raise r.error("backoff_max", "must not be smaller than backoff_initial")
    return settings


def _read_pool(path: Path, text: str, name: str, table: Any) -> PoolConfig:
    r = _Reader(path, text, table, f"pools.{name}")
    if not _POOL_NAME.match(name):
        raise r.error("", "a pool name is 1-64 letters, digits, '_' or '-'")
    r.check_known({"module", "queues", "instances", "directory", "env"})
    queues = r.table.get("queues")
    if (not isinstance(queues, list) or not queues
            or not all(isinstance(q, str) and _QUEUE_NAME.match(q) for q in queues)):
        raise r.error("queues", f"expected a non-empty list of queue names, got {queues!r}")
    env = r.table.get("env", {})
    if not isinstance(env, Mapping) or not all(isinstance(v, str) for v in env.values()):
        raise r.error("env", "expected a table of strings")
    return PoolConfig(
        name=name,
        module=r.string("module"),
        queues=tuple(queues),
        instances=r.number("instances", os.cpu_count() or 1, integer=True, minimum=1),
        directory=r.file_path("directory", ".").resolve(),
        env=dict(env),
    )


def tier_from_config(shared: Config) -> TierConfig:
    """Build the supervisor's view from the shared, already parsed config."""
    if shared.path is None:
        raise ConfigError("the supervisor needs a config file path")
    path = shared.path
    text = shared.text  # as load_config read it: line numbers match what was parsed
    raw = shared.raw
    settings = _read_settings(path, text, raw)
    pools_table = raw.get("pools", {})
    if not isinstance(pools_table, Mapping):
        raise _Reader(path, text, {}, "pools").error("", "expected tables like [pools.NAME]")
    pools = tuple(_read_pool(path, text, name, table) for name, table in pools_table.items())
    return TierConfig(path=path, server_host=shared.server.host, server_port=shared.server.port,
                      settings=settings, pools=pools, shared=shared)


def load_tier(path: str | Path) -> TierConfig:
    """Read and check the whole file; raises ConfigError naming key and line."""
    return tier_from_config(load_config(path))
