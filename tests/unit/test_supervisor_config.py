"""The supervisor's config (errors name key and line, one queue-name rule),
its state file and the queue-size parsing used by ``status``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from starlingpy.client.queue_stats import queue_items
from starlingpy.config import ConfigError, line_of
from starlingpy.supervisor.config import load_tier
from starlingpy.supervisor.state import ProcessRecord, TierState, load_state, save_state

GOOD = """\
[server]
host = "127.0.0.1"
port = 22199
queue_path = "spool"

[supervisor]
run_dir = "run"
log_dir = "log"
grace_period = 3

[pools.graders]
module = "workers.tasks"
queues = ["submissions", "regrades"]
instances = 4
directory = ".."
env = { APP_DATABASE_URL = "sqlite:///x.db" }

[pools.mailers]
module = "mail.tasks"
queues = ["mail"]
instances = 1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tier.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_good_config_resolves_paths_against_the_file(tmp_path):
    tier = load_tier(write(tmp_path, GOOD))
    assert tier.server_address == "127.0.0.1:22199"
    assert tier.settings.run_dir == (tmp_path / "run").resolve()
    assert tier.settings.log_dir == (tmp_path / "log").resolve()
    assert tier.settings.grace_period == 3
    graders, mailers = tier.pools
    assert (graders.name, graders.module, graders.queues, graders.instances) == (
        "graders", "workers.tasks", ("submissions", "regrades"), 4)
    assert graders.directory == tmp_path.parent.resolve()
    assert graders.env == {"APP_DATABASE_URL": "sqlite:///x.db"}
    assert (mailers.name, mailers.instances, mailers.directory) == ("mailers", 1, tmp_path.resolve())


def test_pool_queues_follow_the_protocol_name_rule(tmp_path):
    tier = load_tier(write(tmp_path, GOOD.replace('queues = ["mail"]', 'queues = ["é", "mail.v2"]')))
    assert tier.pools[1].queues == ("é", "mail.v2")


@pytest.mark.parametrize("old, new, key, line", [
    ("instances = 4", 'instances = "four"', "pools.graders.instances", 14),
    ("instances = 1", "instances = 0", "pools.mailers.instances", 21),
    ('queues = ["mail"]', "queues = []", "pools.mailers.queues", 20),
    ('queues = ["mail"]', 'queues = ["bad name"]', "pools.mailers.queues", 20),
    ('queues = ["mail"]', 'queues = ["mail/open"]', "pools.mailers.queues", 20),
    ("grace_period = 3", "grace_perod = 3", "supervisor.grace_perod", 9),
    ("grace_period = 3", "grace_period = true", "supervisor.grace_period", 9),
    ('module = "mail.tasks"\n', "", "pools.mailers.module", 18),  # missing: its table
    ("instances = 4", "instances = 4\ncolour = 1", "pools.graders.colour", 15),
])
def test_a_wrong_key_is_named_with_its_line(tmp_path, old, new, key, line):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_tier(path)
    message = str(caught.value)
    assert f"'{key}'" in message
    assert f"{path}:{line}:" in message


def test_a_toml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, GOOD.replace("instances = 4", "instances = = 4"))
    with pytest.raises(ConfigError, match="line 14"):
        load_tier(path)


def test_locate_tells_the_same_key_in_two_tables_apart():
    assert line_of(GOOD, "pools.graders.instances") == 14
    assert line_of(GOOD, "pools.mailers.instances") == 21
    assert line_of(GOOD, "pools.mailers") == 18
    assert line_of(GOOD, "pools.mailers.missing") == 18  # falls back to its table
    assert line_of(GOOD, "nowhere") is None


def test_line_of_finds_a_key_in_starlings_yaml_too():
    text = "starling:\n  host: 127.0.0.1\n  port: twelve\n"
    assert line_of(text, "starling.port") == 3
    assert line_of("[server]\nport = 1\n", "server.missing") == 1  # its table


def test_state_file_round_trip(tmp_path):
    state = TierState(supervisor_pid=1, started_at=2.0, config="c.toml", server_address="h:1",
                      processes=[ProcessRecord(name="graders.1", kind="worker", pid=5, restarts=2,
                                               state="running", last_exit="signal 9")])
    save_state(tmp_path, state)
    assert load_state(tmp_path) == state
    (tmp_path / "state.json").write_text("{not json")
    assert load_state(tmp_path) is None


def test_queue_sizes_from_stats_are_not_fooled_by_look_alike_names():
    stats = {
        "curr_items": "9",
        "queue_a_items": "3", "queue_a_total_items": "10", "queue_a_logsize": "100",
        "queue_a_total_items_items": "1", "queue_a_total_items_logsize": "5",
        "queue_x_expired_items": "0",
    }
    assert queue_items(stats) == {"a": 3, "a_total_items": 1}
