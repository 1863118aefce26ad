"""The shared config model: one schema per table, errors that name key and
line, the sync policy checked when the file is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from starlingpy.config import ConfigError, parse_config
from starlingpy.journal import SyncPolicy
from starlingpy.queue import QueueLimits

GOOD = """\
[server]
port = 22133
queue_path = "spool"
sync = "always"

[queues.default]
max_items = 10

[queues."emails"]
discard_old = true
"""


def test_a_good_file_is_typed_and_resolved():
    config = parse_config(GOOD, Path("/etc/sp/server.toml"))
    assert config.server.port == 22133
    assert config.store.queue_path == Path("/etc/sp/spool")  # (older files: in [server])
    assert config.store.sync == SyncPolicy("always")
    assert config.default_limits == QueueLimits(max_items=10)
    assert config.limits_for(b"emails") == QueueLimits(max_items=10, discard_old=True)
    assert config.limits_for(b"other") == config.default_limits


@pytest.mark.parametrize("old, new, key, line, problem", [
    ('sync = "always"', 'sync = "sometimes"', "server.sync", 4, "'always', 'never' or milliseconds"),
    ('sync = "always"', "sync = 0", "server.sync", 4, "positive"),
    ("port = 22133", "port = -1", "server.port", 2, "at least 0"),
    ("port = 22133", "port = true", "server.port", 2, "got bool"),
    ("port = 22133", "prot = 1", "server.prot", 2, "unknown key"),
    ("max_items = 10", 'max_items = "ten"', "queues.default.max_items", 7, "an integer"),
    ("discard_old = true", "discard_old = 1", "queues.emails.discard_old", 10, "a boolean"),
    ("[queues.default]", "[colours]", "colours", 6, "unknown section"),
])
def test_a_wrong_key_is_named_with_its_line(old, new, key, line, problem):
    assert old in GOOD
    with pytest.raises(ConfigError) as caught:
        parse_config(GOOD.replace(old, new, 1), Path("/x/s.toml"))
    message = str(caught.value)
    assert message.startswith(f"/x/s.toml:{line}: key '{key}'"), message
    assert problem in message


def test_starlings_yaml_maps_onto_ours():
    config = parse_config("starling:\n  port: 1234\n  pid_file: run/sp.pid\n",
                          Path("/srv/starling.yml"))
    assert (config.server.port, config.server.pid) == (1234, Path("/srv/run/sp.pid"))
    with pytest.raises(ConfigError, match=r"starling.yml:2: key 'starling.port'"):
        parse_config("starling:\n  port: many\n", Path("/srv/starling.yml"))
