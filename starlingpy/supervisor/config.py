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

from starlingpy.config import Config, ConfigError, Field, key_error, load_config, read_table
from starlingpy.protocol.keys import queue_name_problem

_POOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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


def _queue_names(queues: list) -> tuple[str, ...]:
    if not queues or not all(isinstance(q, str) for q in queues):
        raise ValueError(f"expected a non-empty list of queue names, got {queues!r}")
    for queue in queues:
        if (problem := queue_name_problem(queue.encode())) is not None:
            raise ValueError(f"queue name {queue!r} {problem}")
    return tuple(queues)


def _environment(env: dict) -> dict[str, str]:
    if not all(isinstance(v, str) for v in env.values()):
        raise ValueError("expected a table of strings")
    return dict(env)


def _non_empty(value: str) -> str:
    if not value:
        raise ValueError("expected a non-empty string")
    return value


SUPERVISOR_SCHEMA: dict[str, Field] = {
    "run_dir": Field((str,), path=True), "log_dir": Field((str,), path=True),
    "grace_period": Field((int, float)),
    "backoff_initial": Field((int, float), minimum=0.01),
    "backoff_max": Field((int, float), minimum=0.01),
    "crash_loop_restarts": Field((int,), minimum=1),
    "crash_loop_window": Field((int, float), minimum=0.01),
    "ready_timeout": Field((int, float), minimum=0.1),
    "credentials": Field((str,), path=True),  # login and TLS for the workers and `status`
}
POOL_SCHEMA: dict[str, Field] = {
    "module": Field((str,), required=True, check=_non_empty),
    "queues": Field((list,), required=True, check=_queue_names),
    "instances": Field((int,), minimum=1),
    "directory": Field((str,), path=True),
    "env": Field((dict,), check=_environment),
}


def _read_settings(path: Path, text: str, raw: Mapping[str, Any]) -> SupervisorSettings:
    values = read_table(path, text, raw.get("supervisor", {}), "supervisor", SUPERVISOR_SCHEMA)
    values.setdefault("run_dir", path.parent / "var/run")
    values.setdefault("log_dir", path.parent / "var/log")
    if "credentials" in values:
        values["credentials"] = values["credentials"].resolve()
    settings = SupervisorSettings(**{**values, "run_dir": values["run_dir"].resolve(),
                                     "log_dir": values["log_dir"].resolve()})
    if settings.backoff_max < settings.backoff_initial:
        raise key_error(path, text, "supervisor.backoff_max", "must not be smaller than backoff_initial")
    return settings


def _read_pool(path: Path, text: str, name: str, table: Any) -> PoolConfig:
    if not _POOL_NAME.match(name):
        raise key_error(path, text, f"pools.{name}", "a pool name is 1-64 letters, digits, '_' or '-'")
    values = read_table(path, text, table, f"pools.{name}", POOL_SCHEMA)
    directory = values.pop("directory", path.parent)
    return PoolConfig(name=name, **{"instances": os.cpu_count() or 1, **values},
                      directory=directory.resolve())


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
        raise key_error(path, text, "pools", "expected tables like [pools.NAME]")
    pools = tuple(_read_pool(path, text, name, table) for name, table in pools_table.items())
    return TierConfig(path=path, server_host=shared.server.host, server_port=shared.server.port,
                      settings=settings, pools=pools, shared=shared)


def load_tier(path: str | Path) -> TierConfig:
    """Read and check the whole file; raises ConfigError naming key and line."""
    return tier_from_config(load_config(path))
