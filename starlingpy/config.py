"""The one configuration model shared by `starlingpy serve`, the workers and
the supervisor.

A config file is TOML (ours) or YAML with a ``starling:`` section (Ruby
Starling's own).  Ours::

    [server]                      # the process: network, limits, logging
    host = "127.0.0.1"
    port = 22122
    max_item_size = 16777216
    max_connections = 4096
    timeout = 0                   # idle disconnect in seconds, 0 = never
    enable_shutdown = false
    flush_all_empties = false
    log = "var/log/server.log"    # relative paths resolve against this file's folder
    pid = "var/run/server.pid"
    auth_file = "auth"            # users, password hashes, rights (starlingpy.auth)
    tls_cert = "server.pem"       # with tls_key: TLS-only listener; tls_ca: client certificates
    metrics = "127.0.0.1:9122"    # Prometheus endpoint; off when absent
    metrics_queues = 100          # queues with their own label; the rest sum as "(other)"

    [store]                       # where the queues are kept (docs/storage.md)
    kind = "journal"              # journal files in queue_path, or "postgresql" (url = ...)
    queue_path = "var/spool"
    sync = "1000"                 # "always" | "never" | period in ms (checked on load)
    max_journal_size = 16777216
    max_queues = 10000            # past it, a set to a new name: SERVER_ERROR too many queues
    file_mode = 0o600             # journals hold the messages

    [queues.default]              # limits for every queue ...
    max_items = 1000000
    [queues."emails"]             # ... overridden by name
    max_bytes = 104857600
    discard_old = true

(``queue_path``, ``sync`` and ``max_journal_size`` are still accepted in
``[server]``, where older files have them.)

Other top-level tables (``[supervisor]``, ``[pools.NAME]``) belong to their
owners, who read them from ``Config.raw`` with :func:`read_table` and a
schema of :class:`Field` s, like the tables here: one validator, whose
errors name the key and its line.

Why no schema library (pydantic, msgspec): ``tomllib`` keeps no positions,
so naming the line is ours to do whatever validates the types, and the
whole schema is a few dozen scalar keys; a dependency would not remove the
part that needs code.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlingpy import DEFAULT_PORT
from starlingpy.journal.sync import SyncPolicy
from starlingpy.queue import QueueLimits

MIB = 1024 * 1024


class ConfigError(Exception):
    """A configuration problem, worded for a human: names the key and line."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_item_size: int = 16 * MIB
    max_connections: int = 4096
    max_line: int = 2048
    timeout: float = 0.0
    enable_shutdown: bool = False
    flush_all_empties: bool = False
    log: Path | None = None
    pid: Path | None = None
    user: str | None = None
    group: str | None = None
    daemonize: bool = False
    verbose: int = 0
    ready_fd: int | None = None  # command line only (the supervisor's readiness pipe)
    metrics: str | None = None  # HOST:PORT of the Prometheus endpoint; None: off
    metrics_queues: int = 100  # queues labelled in metrics, deepest first
    auth_file: Path | None = None  # users, password hashes and rights (starlingpy.auth)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None  # client certificates must be signed by it (mutual TLS)


STORE_KINDS = ("journal", "postgresql")


@dataclass(frozen=True)
class StoreConfig:
    """Where the queues are kept: the store's own settings, apart from the process's."""
    kind: str = "journal"
    queue_path: Path = Path("var/spool")
    sync: SyncPolicy = SyncPolicy("periodic", 1000)
    max_journal_size: int = 16 * MIB
    max_queues: int = 10_000  # 0: no limit
    file_mode: int = 0o600  # journals hold the messages
    # kind = "postgresql" (starlingpy/store/postgres.py):
    url: str | None = None  # libpq URL; postgresql+psycopg:// accepted
    identity: str | None = None  # this server's name in leases; default host:port
    lease: float = 30.0  # seconds an open item of a dead server stays held
    pool_size: int = 4  # database connections (one worker thread each)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    default_limits: QueueLimits = field(default_factory=QueueLimits)
    limits_by_name: Mapping[bytes, QueueLimits] = field(default_factory=dict)
    path: Path | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""  # the file as read, for errors that name a line

    def limits_for(self, name: bytes) -> QueueLimits:
        return self.limits_by_name.get(name, self.default_limits)


@dataclass(frozen=True)
class Field:
    """What one key accepts: its types, a lower bound for numbers, whether it
    is a path (resolved against the file's folder), whether it must be set,
    and an extra ``check`` returning the value to keep (raise ValueError
    with the problem in words to refuse it)."""

    types: tuple[type, ...]
    minimum: float | None = 0
    path: bool = False
    required: bool = False
    check: Callable[[Any], Any] | None = None


def _sync_policy(value: Any) -> SyncPolicy:
    return SyncPolicy.parse(str(value))  # ValueError names the problem


def _store_kind(value: str) -> str:
    if value not in STORE_KINDS:
        raise ValueError(f"unknown store {value!r} (known: {', '.join(STORE_KINDS)})")
    return value


# One schema per table: the only description of what a file may say. A new
# section adds its schema here and a reader in parse_config (or its owner's
# module, as the supervisor's does).
SERVER_SCHEMA: dict[str, Field] = {
    "host": Field((str,)), "port": Field((int,)),
    "max_item_size": Field((int,)), "max_connections": Field((int,), minimum=1),
    "max_line": Field((int,), minimum=1), "timeout": Field((int, float)),
    "enable_shutdown": Field((bool,)), "flush_all_empties": Field((bool,)),
    "log": Field((str,), path=True),
    "pid": Field((str,), path=True), "user": Field((str,)), "group": Field((str,)),
    "daemonize": Field((bool,)), "verbose": Field((int,)),
    "metrics": Field((str,)), "metrics_queues": Field((int,)),
    "auth_file": Field((str,), path=True), "tls_cert": Field((str,), path=True),
    "tls_key": Field((str,), path=True), "tls_ca": Field((str,), path=True),
}
STORE_SCHEMA: dict[str, Field] = {
    "kind": Field((str,), check=_store_kind), "queue_path": Field((str,), path=True),
    "sync": Field((str, int), check=_sync_policy), "max_journal_size": Field((int,)),
    "max_queues": Field((int,)), "file_mode": Field((int,), check=lambda mode: mode & 0o777),
    "url": Field((str,)), "identity": Field((str,)), "lease": Field((int, float), minimum=1),
    "pool_size": Field((int,), minimum=1),
}
STORE_KEYS_IN_SERVER = ("queue_path", "sync", "max_journal_size")  # where older files set them
PATH_KEYS = {key for schema in (SERVER_SCHEMA, STORE_SCHEMA) for key, f in schema.items() if f.path}
LIMITS_SCHEMA: dict[str, Field] = {
    "max_items": Field((int,)), "max_bytes": Field((int,)), "max_item_size": Field((int,)),
    "max_age": Field((int, float)), "discard_old": Field((bool,)),
}
# Top-level tables a file may hold; the supervisor reads its own from Config.raw.
SECTIONS = {"server", "store", "queues", "supervisor", "pool", "pools", "workers", "app"}
# Ruby Starling's YAML keys (its `starling:` section) mapped onto ours.
_STARLING_YAML_KEYS = {
    "host": "host", "port": "port", "queue_path": "queue_path", "timeout": "timeout",
    "pid_file": "pid", "log_file": "log", "logger": "log", "user": "user", "group": "group",
    "daemonize": "daemonize",
}


_TABLE_HEADER = re.compile(r'^\s*\[\s*([^\]]+?)\s*\]\s*(#.*)?$')
_ASSIGNMENT = re.compile(r'^\s*"?([A-Za-z0-9_-]+)"?\s*=')


def line_of(text: str, dotted: str) -> int | None:
    """1-based line where the key ``dotted`` (``"pools.graders.instances"``)
    is set in TOML ``text``, or of its table header, or None.

    Section-aware, so the same key in two tables is told apart. Best effort:
    it understands ``[a.b]`` headers and ``key = ...`` lines, which is how
    people write these files. A text without table headers (Starling's YAML)
    gets the first line that sets the key's last part (``key:``).
    """
    parts = dotted.split(".")
    current: list[str] = []
    table_line: int | None = None
    saw_header = False
    for number, line in enumerate(text.splitlines(), 1):
        header = _TABLE_HEADER.match(line)
        if header:
            saw_header = True
            current = [p.strip().strip('"\'') for p in header.group(1).split(".")]
            if current == parts:
                table_line = number
            continue
        key = _ASSIGNMENT.match(line)
        if key and current + [key.group(1)] == parts:
            return number
    if table_line is not None:
        return table_line
    if not saw_header:
        return _first_line_setting(text, parts[-1])
    if len(parts) > 1:
        return line_of(text, ".".join(parts[:-1]))
    return None


def _first_line_setting(text: str, key: str) -> int | None:
    pattern = re.compile(rf'^\s*"?{re.escape(key)}"?\s*[=:]', re.MULTILINE)
    match = pattern.search(text)
    return text.count("\n", 0, match.start()) + 1 if match else None


def key_error(path: Path | None, text: str, key: str, problem: str) -> ConfigError:
    """A ConfigError for the dotted ``key``: ``file:line: key 'a.b': problem``."""
    where = str(path) if path else "config"
    line = line_of(text, key)
    at = f"{where}:{line}" if line else where
    return ConfigError(f"{at}: key {key!r}: {problem}")


def _type_names(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "a boolean",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def read_table(path: Path | None, text: str, table: Any, prefix: str,
               schema: Mapping[str, Field]) -> dict[str, Any]:
    """Check ``table`` (the TOML table at dotted ``prefix``) against
    ``schema``: the values set, typed, bounded and resolved. Raises a
    ConfigError naming the key and its line."""
    if not isinstance(table, Mapping):
        raise key_error(path, text, prefix, "expected a table")
    for key in schema:
        if schema[key].required and key not in table:
            raise key_error(path, text, f"{prefix}.{key}", "is required")
    values: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}.{key}"
        field_ = schema.get(key)
        if field_ is None:
            raise key_error(path, text, dotted,
                            f"unknown key (expected one of: {', '.join(sorted(schema))})")
        # bool is an int in Python; refuse it where a number is wanted.
        if not isinstance(value, field_.types) or (isinstance(value, bool) and bool not in field_.types):
            raise key_error(path, text, dotted, f"expected {_type_names(field_.types)}, "
                                                f"got {type(value).__name__} {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if field_.minimum is not None and value < field_.minimum:
                raise key_error(path, text, dotted, f"must be at least {field_.minimum}, got {value}")
        if isinstance(value, str) and field_.path:
            if not value:
                raise key_error(path, text, dotted, "expected a path, got an empty string")
            value = Path(value)
            if path is not None and not value.is_absolute():
                value = path.parent / value
        if field_.check is not None:
            try:
                value = field_.check(value)
            except ValueError as error:
                raise key_error(path, text, dotted, str(error)) from None
        values[key] = value
    return values


def parse_config(text: str, path: Path | None = None) -> Config:
    """Parse TOML (ours) or Starling's YAML; raises ConfigError."""
    if path is not None and path.suffix in (".yml", ".yaml"):
        return _parse_starling_yaml(text, path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path or 'config'}: {error}") from None
    unknown = set(raw) - SECTIONS
    if unknown:
        raise key_error(path, text, sorted(unknown)[0],
                        f"unknown section (expected one of: {', '.join(sorted(SECTIONS))})")
    server, store = _server_and_store(path, text, raw.get("server", {}), raw.get("store", {}),
                                      "server")
    queues = raw.get("queues", {})
    if not isinstance(queues, Mapping):
        raise key_error(path, text, "queues", "expected a table")
    default = QueueLimits(**read_table(path, text, queues.get("default", {}), "queues.default",
                                       LIMITS_SCHEMA))
    # A per-queue table overrides only what it sets; the rest inherit the default.
    by_name = {name.encode(): dataclasses.replace(default, **read_table(
                   path, text, table, f"queues.{name}", LIMITS_SCHEMA))
               for name, table in queues.items() if name != "default"}
    return Config(server=server, store=store, default_limits=default, limits_by_name=by_name,
                  path=path, raw=raw, text=text)


def _server_and_store(path: Path | None, text: str, server_table: Any, store_table: Any,
                      prefix: str) -> tuple[ServerConfig, StoreConfig]:
    """The [server] and [store] tables; store keys found in [server] (older
    files, Starling's YAML) count for the store unless [store] sets them too."""
    older = {key: STORE_SCHEMA[key] for key in STORE_KEYS_IN_SERVER}
    server = read_table(path, text, server_table, prefix, {**SERVER_SCHEMA, **older})
    store = {key: server.pop(key) for key in STORE_KEYS_IN_SERVER if key in server}
    store.update(read_table(path, text, store_table, "store", STORE_SCHEMA))
    return ServerConfig(**server), StoreConfig(**store)


def _parse_starling_yaml(text: str, path: Path) -> Config:
    import yaml

    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: {error}") from None
    section = raw.get("starling") if isinstance(raw, Mapping) else None
    if not isinstance(section, Mapping):
        raise ConfigError(f"{path}: a Starling config needs a 'starling:' section")
    table = {_STARLING_YAML_KEYS[k]: v for k, v in section.items() if k in _STARLING_YAML_KEYS}
    server, store = _server_and_store(path, text, table, {}, "starling")
    return Config(server=server, store=store, path=path, raw=raw, text=text)


def load_config(path: str | Path) -> Config:
    path = Path(path).resolve()
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    return parse_config(text, path)
