"""The [store] section: the store's settings apart from the process's."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from starlingpy.cli import serve
from starlingpy.config import ConfigError, StoreConfig, parse_config
from starlingpy.journal import SyncPolicy


def test_store_section_holds_the_store_settings(tmp_path):
    path = tmp_path / "q.toml"
    config = parse_config('[server]\nport = 1\n[store]\nkind = "journal"\nqueue_path = "spool"\n'
                          'sync = "always"\nmax_journal_size = 4096\n', path)
    assert config.store == StoreConfig("journal", tmp_path / "spool", SyncPolicy("always"), 4096)
    assert config.server.port == 1


def test_older_files_keep_store_keys_in_server(tmp_path):
    config = parse_config('[server]\nqueue_path = "q"\nsync = 250\n', tmp_path / "old.toml")
    assert (config.store.queue_path, config.store.sync) == (tmp_path / "q", SyncPolicy("periodic", 250))


@pytest.mark.parametrize("text, message", [
    ('[store]\nkind = "cassandra"\n', "q.toml:2: key 'store.kind': unknown store 'cassandra'"),
    ('[store]\nsync = "sometimes"\n', "q.toml:2: key 'store.sync': sync policy must be"),
    ('[server]\nport = 1\nsync = "0"\n', "q.toml:3: key 'server.sync': sync period must be"),
    ('[store]\nhost = "x"\n', "q.toml:2: key 'store.host': unknown key"),
])
def test_bad_store_settings_are_refused_when_the_file_is_loaded(tmp_path, text, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "q.toml")
    assert message in str(caught.value)


def test_command_line_flags_override_the_store_section(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text('[store]\nqueue_path = "from-file"\nsync = "always"\n')
    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    args = parser.parse_args(["serve", "-f", str(path), "--sync", "never", "-q", "cli"])
    config = serve.resolve_config(args)
    assert (config.store.queue_path, config.store.sync) == (Path("cli"), SyncPolicy("never"))
