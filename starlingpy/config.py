"""The one configuration model shared by `starlingpy serve`, the workers and
the supervisor.

A config file is TOML (ours) or YAML with a ``starling:`` section (Ruby
Starling's own).  Ours::

    [server]
    host = "127.0.0.1"
    port = 22122
    queue_path = "var/spool"      # relative paths resolve against this file's folder
    sync = "1000"                 # "always" | "never" | period in ms
    max_item_size = 16777216
    max_connections = 4096
    timeout = 0                   # idle disconnect in seconds, 0 = never
    enable_shutdown = false
    flush_all_empties = false
    max_journal_size = 16777216
    log = "var/log/server.log"
    pid = "var/run/server.pid"
    auth_file = "auth"            # users, password hashes, rights (starlingpy.auth)
    tls_cert = "server.pem"       # with tls_key: TLS-only listener; tls_ca: client certificates

    [queues.default]              # limits for every queue ...
    max_items = 1000000
    [queues."emails"]             # ... overridden by name
    max_bytes = 104857600
    discard_old = true

Other top-level tables (``[supervisor]``, ``[[pool]]``) belong to their
owners, who read them from ``Config.raw``.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlingpy import DEFAULT_PORT
from starlingpy.queue import QueueLimits

MIB = 1024 * 1024


class ConfigError(Exception):
    """A configuration problem, worded for a human: names the key and line."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    queue_path: Path = Path("var/spool")
    sync: str = "1000"
    max_item_size: int = 16 * MIB
    max_connections: int = 4096
    max_line: int = 2048
    timeout: float = 0.0
    enable_shutdown: bool = False
    flush_all_empties: bool = False
    max_journal_size: int = 16 * MIB
    log: Path | None = None
    pid: Path | None = None
    user: str | None = None
    group: str | None = None
    daemonize: bool = False
    verbose: int = 0
    auth_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    default_limits: QueueLimits = field(default_factory=QueueLimits)
    limits_by_name: Mapping[bytes, QueueLimits] = field(default_factory=dict)
    path: Path | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""  # the file as read, for errors that name a line

    def limits_for(self, name: bytes) -> QueueLimits:
        return self.limits_by_name.get(name, self.default_limits)


# Types we accept per key; paths are resolved against the file's folder.
_SERVER_KEYS: dict[str, tuple[type, ...]] = {
    "host": (str,), "port": (int,), "queue_path": (str,), "sync": (str, int),
    "max_item_size": (int,), "max_connections": (int,), "max_line": (int,),
    "timeout": (int, float), "enable_shutdown": (bool,), "flush_all_empties": (bool,),
    "max_journal_size": (int,), "log": (str,), "pid": (str,), "user": (str,),
    "group": (str,), "daemonize": (bool,), "verbose": (int,), "auth_file": (str,),
    "tls_cert": (str,), "tls_key": (str,), "tls_ca": (str,),
}
PATH_KEYS = {"queue_path", "log", "pid", "auth_file", "tls_cert", "tls_key", "tls_ca"}
_LIMIT_KEYS: dict[str, tuple[type, ...]] = {
    "max_items": (int,), "max_bytes": (int,), "max_item_size": (int,),
    "max_age": (int, float), "discard_old": (bool,),
}
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


def _check_type(path, text, key, value, types) -> Any:
    # bool is an int in Python; refuse it where a number is wanted.
    if isinstance(value, bool) and bool not in types:
        raise key_error(path, text, key, f"expected {'/'.join(t.__name__ for t in types)}, got a boolean")
    if not isinstance(value, types):
        raise key_error(path, text, key, f"expected {'/'.join(t.__name__ for t in types)}, "
                                         f"got {type(value).__name__}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise key_error(path, text, key, "must not be negative")
    return value


def _server_from(table: Mapping[str, Any], path: Path | None, text: str, prefix: str) -> dict:
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _SERVER_KEYS:
            raise key_error(path, text, f"{prefix}{key}", "unknown key")
        value = _check_type(path, text, f"{prefix}{key}", value, _SERVER_KEYS[key])
        if key in PATH_KEYS:
            value = Path(value)
            if path is not None and not value.is_absolute():
                value = path.parent / value
        if key == "sync":
            value = str(value)
        values[key] = value
    return values


def _limits_from(table: Any, path: Path | None, text: str, prefix: str) -> QueueLimits:
    if not isinstance(table, Mapping):
        raise key_error(path, text, prefix.rstrip("."), "expected a table")
    values = {}
    for key, value in table.items():
        if key not in _LIMIT_KEYS:
            raise key_error(path, text, f"{prefix}{key}", "unknown key")
        values[key] = _check_type(path, text, f"{prefix}{key}", value, _LIMIT_KEYS[key])
    return QueueLimits(**values)


def parse_config(text: str, path: Path | None = None) -> Config:
    """Parse TOML (ours) or Starling's YAML; raises ConfigError."""
    if path is not None and path.suffix in (".yml", ".yaml"):
        return _parse_starling_yaml(text, path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path or 'config'}: {error}") from None
    unknown = set(raw) - {"server", "queues", "supervisor", "pool", "pools", "workers", "app"}
    if unknown:
        key = sorted(unknown)[0]
        raise key_error(path, text, key, "unknown section")
    server_table = raw.get("server", {})
    if not isinstance(server_table, Mapping):
        raise key_error(path, text, "server", "expected a table")
    server = ServerConfig(**_server_from(server_table, path, text, "server."))
    queues = raw.get("queues", {})
    if not isinstance(queues, Mapping):
        raise key_error(path, text, "queues", "expected a table")
    default = _limits_from(queues.get("default", {}), path, text, "queues.default.")
    by_name = {name.encode(): dataclasses.replace(default, **_explicit(
                   _limits_from(table, path, text, f"queues.{name}."), table))
               for name, table in queues.items() if name != "default"}
    return Config(server=server, default_limits=default, limits_by_name=by_name, path=path, raw=raw,
                  text=text)


def _explicit(limits: QueueLimits, table: Mapping[str, Any]) -> dict:
    """The fields a per-queue table actually set (the rest inherit the default)."""
    return {key: getattr(limits, key) for key in table}


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
    return Config(server=ServerConfig(**_server_from(table, path, text, "starling.")), path=path, raw=raw,
                  text=text)


def load_config(path: str | Path) -> Config:
    path = Path(path).resolve()
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    return parse_config(text, path)
