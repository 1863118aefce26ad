"""`starlingpy serve` as a real subprocess: crashes, restarts, damage, takeover."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from starlingpy.names import queue_filename
from tests.support import REPO, BlockingClient, ServerProcess, wait_until


def journal_path(spool, name: bytes):
    return spool / queue_filename(name)


def test_sigkill_while_streaming_loses_no_acknowledged_item(tmp_path):
    spool = tmp_path / "spool"
    server = ServerProcess(spool).start()
    acknowledged: dict[int, list[bytes]] = {n: [] for n in range(4)}
    stop = threading.Event()

    def producer(n: int) -> None:
        try:
            with BlockingClient(server.address) as client:
                for i in range(100000):
                    if stop.is_set():
                        return
                    value = b"p%d-%06d" % (n, i)
                    if client.set(b"stream", value) == b"STORED\r\n":
                        acknowledged[n].append(value)
        except (OSError, EOFError):
            return  # the server died under us: expected

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: sum(map(len, acknowledged.values())) >= 2000, 60, message="2000 acks")
    server.kill()
    stop.set()
    for t in threads:
        t.join(30)
    server.restart()
    with BlockingClient(server.address) as client:
        items = client.drain(b"stream")
    server.terminate()
    # Every acknowledged item is back exactly once, each producer's in order.
    assert len(items) == len(set(items))
    for n, acked in acknowledged.items():
        mine = [item for item in items if item.startswith(b"p%d-" % n)]
        assert mine[:len(acked)] == acked
        assert len(mine) - len(acked) <= 1  # at most the one in flight at the kill


def test_sigterm_exits_zero_and_open_items_go_back(tmp_path):
    server = ServerProcess(tmp_path / "spool").start()
    with BlockingClient(server.address) as client:
        client.set(b"q", b"one")
        client.set(b"q", b"two")
        reply = client.call(b"get q/open\r\n", b"END\r\n")
        assert b"one" in reply
        assert server.terminate() == 0
    server.restart()
    with BlockingClient(server.address) as client:
        assert client.drain(b"q") == [b"one", b"two"]
    server.terminate()


def test_open_item_survives_sigkill_and_returns_at_the_head(tmp_path):
    server = ServerProcess(tmp_path / "spool").start()
    with BlockingClient(server.address) as client:
        for word in (b"a", b"b", b"c"):
            client.set(b"r", word)
        assert b"a" in client.call(b"get r/open\r\n", b"END\r\n")
        server.kill()
    server.restart()
    with BlockingClient(server.address) as client:
        assert client.drain(b"r") == [b"a", b"b", b"c"]
    server.terminate()


def fill(server, queue: bytes, count: int) -> list[bytes]:
    values = [b"item-%04d-" % i + b"x" * 50 for i in range(count)]
    with BlockingClient(server.address) as client:
        for value in values:
            assert client.set(queue, value) == b"STORED\r\n"
    return values


def test_torn_tail_is_cut_and_the_rest_served(tmp_path):
    spool = tmp_path / "spool"
    server = ServerProcess(spool).start()
    values = fill(server, b"torn", 100)
    server.kill()
    path = journal_path(spool, b"torn")
    size = path.stat().st_size
    with open(path, "r+b") as journal:
        journal.truncate(size - 7)
    server.restart()
    with BlockingClient(server.address) as client:
        items = client.drain(b"torn")
    server.terminate()
    assert items == values[:len(items)]
    assert len(items) >= 98
    assert b"torn" in bytes(server.output) or b"cut" in bytes(server.output).lower()


def test_flipped_byte_mid_file_keeps_a_broken_copy_and_never_returns_garbage(tmp_path):
    spool = tmp_path / "spool"
    server = ServerProcess(spool).start()
    values = fill(server, b"flip", 200)
    server.kill()
    path = journal_path(spool, b"flip")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    server.restart()
    with BlockingClient(server.address) as client:
        items = client.drain(b"flip")
    server.terminate()
    assert items == values[:len(items)]
    assert len(items) < 200
    assert list(spool.glob("*.broken*"))


def starling_record_add(data: bytes, expiry: int = 0) -> bytes:
    return b"\x00" + struct.pack("<I", len(data) + 4) + struct.pack("<I", expiry) + data


def test_a_ruby_starling_spool_is_taken_over(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "jobs").write_bytes(
        starling_record_add(b"first") + starling_record_add(b"second") + b"\x01"
        + starling_record_add(b"third") + starling_record_add(b"fourth")
        + b"\x00" + struct.pack("<I", 40) + b"cut short")
    (spool / "mail").write_bytes(starling_record_add(b"hello") + starling_record_add(b"old", expiry=1))
    server = ServerProcess(spool).start()
    with BlockingClient(server.address) as client:
        stats = client.call(b"stats\r\n", b"END\r\n")
        assert b"STAT queue_jobs_items 3\r\n" in stats
        assert client.drain(b"jobs") == [b"second", b"third", b"fourth"]
        assert client.drain(b"mail") == [b"hello"]
    server.terminate()
    server.restart()  # taken over once: nothing comes back twice
    with BlockingClient(server.address) as client:
        assert client.drain(b"jobs") == []
        assert client.drain(b"mail") == []
    server.terminate()
    assert not [p for p in tmp_path.iterdir() if p.name != "spool"]


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "starlingpy", *args], cwd=REPO,
                          capture_output=True, timeout=timeout)


def test_a_second_server_on_the_same_directory_is_refused(tmp_path):
    spool = tmp_path / "spool"
    server = ServerProcess(spool).start()
    second = run_cli("serve", "-p", "0", "-q", str(spool))
    assert second.returncode != 0
    assert b"lock" in second.stderr.lower() or b"another" in second.stderr.lower()
    with BlockingClient(server.address) as client:
        assert client.set(b"still", b"fine") == b"STORED\r\n"
    server.terminate()


def test_an_unusable_directory_is_refused_with_a_clear_message(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_cli("serve", "-p", "0", "-q", str(blocker / "spool"))
    assert result.returncode != 0
    assert str(blocker).encode() in result.stderr


def test_daemonize_with_pid_file(tmp_path):
    pid_file = tmp_path / "server.pid"
    log_file = tmp_path / "server.log"
    result = run_cli("serve", "-d", "-p", "0", "-q", str(tmp_path / "spool"), "-P", str(pid_file),
                     "-L", str(log_file))
    assert result.returncode == 0, result.stderr
    address = result.stdout.decode().split("listening on ")[1].split()[0]
    pid = int(pid_file.read_text())
    try:
        with BlockingClient(address) as client:
            assert client.set(b"d", b"x") == b"STORED\r\n"
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_file.exists(), 20, message="pid file removed")
    assert "listening on" in log_file.read_text()


def test_config_files_toml_and_starling_yaml(tmp_path):
    toml = tmp_path / "starlingpy.toml"
    toml.write_text('[server]\nhost = "127.0.0.1"\nport = 0\nqueue_path = "q"\n'
                    '[queues.small]\nmax_items = 2\n')
    server = ServerProcess(tmp_path / "unused", "-f", str(toml))
    # the -q given by ServerProcess wins over the file, as flags should
    server.start()
    with BlockingClient(server.address) as client:
        assert client.set(b"small", b"1") == b"STORED\r\n"
        assert client.set(b"small", b"2") == b"STORED\r\n"
        assert client.set(b"small", b"3") == b"NOT_STORED\r\n"
    server.terminate()
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nport = "twelve"\n')
    result = run_cli("serve", "-f", str(bad))
    assert result.returncode == 2
    assert b"server.port" in result.stderr and b":2" in result.stderr
    yaml = tmp_path / "starling.yml"
    yaml.write_text("starling:\n  host: 127.0.0.1\n  port: 0\n  queue_path: yq\n")
    server = ServerProcess(tmp_path / "yq", "-f", str(yaml)).start()
    server.terminate()


def test_stats_command_prints_queues(tmp_path):
    server = ServerProcess(tmp_path / "spool").start()
    fill(server, b"visible", 3)
    result = run_cli("stats", server.address)
    server.terminate()
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "visible" in out and "3" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")
def test_user_and_group_options_drop_privileges(tmp_path):
    import pwd
    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    # pytest's tmp_path is private to root; nobody needs a path it can reach.
    base = Path(tempfile.mkdtemp(prefix="starlingpy-user-"))
    try:
        base.chmod(0o755)
        spool = base / "spool"
        spool.mkdir()
        os.chown(spool, nobody.pw_uid, nobody.pw_gid)
        server = ServerProcess(spool, "-u", "nobody").start()
        with BlockingClient(server.address) as client:
            assert client.set(b"q", b"x") == b"STORED\r\n"
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4
        assert all(p.stat().st_uid == nobody.pw_uid for p in spool.iterdir())
        server.terminate()
        # a directory the user cannot write is refused, clearly
        private = base / "private"
        private.mkdir(mode=0o700)
        result = run_cli("serve", "-p", "0", "-u", "nobody", "-q", str(private / "spool"))
        assert result.returncode != 0
        assert b"private" in result.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_bad_sync_policy_is_refused_before_start(tmp_path):
    flag = subprocess.run([sys.executable, "-m", "starlingpy", "serve", "--sync", "sometimes",
                           "-q", str(tmp_path / "spool")], cwd=REPO, capture_output=True, timeout=30)
    assert flag.returncode == 2 and b"'always', 'never' or milliseconds" in flag.stderr
    config = tmp_path / "s.toml"
    config.write_text('[server]\nport = 0\nsync = "sometimes"\n')
    from_file = subprocess.run([sys.executable, "-m", "starlingpy", "serve", "-f", str(config)],
                               cwd=REPO, capture_output=True, timeout=30)
    assert from_file.returncode == 2, from_file.stderr
    assert f"{config}:3: key 'server.sync'".encode() in from_file.stderr
    assert not (tmp_path / "spool").exists()
