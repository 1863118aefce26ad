"""A real server process when the machine runs out: a real full disk (a
small tmpfs, when the tests run as root) and a real descriptor limit
(``ulimit -n 256``). It answers, stays up, loses nothing it acknowledged,
and recovers by itself."""

from __future__ import annotations

import os
import resource
import socket
import subprocess

import pytest

from tests.support import BlockingClient, ServerProcess, wait_until


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted for this test (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root: the full-disk test did not run")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the full-disk test did not run")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_refuses_sets_drains_gets_restarts_and_recovers(small_disk):
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (1024 * 1024))  # space we give back later
    spool = small_disk / "spool"
    server = ServerProcess(spool).start()
    try:
        acknowledged = []
        with BlockingClient(server.address) as client:
            for i in range(2000):
                data = b"%04d" % i + b"x" * 4000
                reply = client.set(b"big", data)
                if reply != b"STORED\r\n":
                    assert reply == b"SERVER_ERROR out of space\r\n"
                    break
                acknowledged.append(data)
            else:
                pytest.fail("a 2 MiB disk took 8 MB of items")
            assert len(acknowledged) > 50
            assert client.call(b"version\r\n").startswith(b"VERSION")  # the connection lives
            taken = [client.get(b"big") for _ in range(3)]  # gets keep draining
            assert taken == acknowledged[:3]
        server.kill()
        server.restart()  # a start on a full disk serves
        with BlockingClient(server.address) as client:
            drained = client.drain(b"big")
            # at least once: takes whose removal could not be written come back
            redelivered = len(drained) - (len(acknowledged) - 3)
            assert 0 <= redelivered <= 3 and drained == acknowledged[3 - redelivered:]
            assert client.set(b"big", b"y" * 8000) == b"SERVER_ERROR out of space\r\n"
            ballast.unlink()  # space returns: no restart needed
            wait_until(lambda: client.set(b"big", b"room again") == b"STORED\r\n",
                       message="sets to work again once space returned")
            assert client.drain(b"big") == [b"room again"]
        assert server.terminate() == 0
        assert b"Traceback" not in server.output
    finally:
        server.kill()


def limited_to(descriptors: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))
    return apply


class LimitedServer(ServerProcess):
    """A server started under ``ulimit -n``: the limit is set in the child."""

    def __init__(self, *args, descriptors: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.descriptors = descriptors

    def start(self, timeout: float = 30.0):
        real = subprocess.Popen

        def popen(*args, **kwargs):
            return real(*args, preexec_fn=limited_to(self.descriptors), **kwargs)

        subprocess.Popen = popen
        try:
            return super().start(timeout)
        finally:
            subprocess.Popen = real


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_under_ulimit_256_names_and_connection_floods_cost_no_descriptors(tmp_path):
    server = LimitedServer(tmp_path / "spool", descriptors=256).start()
    try:
        with BlockingClient(server.address) as client:
            names = [b"name%04d" % i for i in range(1500)]
            for name in names:  # a new queue file per set
                assert client.set(name, b"v-" + name) == b"STORED\r\n"
            assert open_fds(server.proc.pid) < 256
            for name in names[:300]:  # waiting on new names creates nothing
                assert client.call(b"get fresh-%s/t=1\r\n" % name, b"END\r\n") == b"END\r\n"
            assert not any(p.name.startswith("fresh") for p in (tmp_path / "spool").iterdir())
        flood = []
        for _ in range(400):  # more than the server may serve under its limit
            try:
                flood.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            except OSError:
                break
        assert open_fds(server.proc.pid) < 256
        for sock in flood:
            sock.close()
        with BlockingClient(server.address) as client:  # still serving once the flood is gone
            wait_until(lambda: client.call(b"version\r\n").startswith(b"VERSION"))
            assert client.get(b"name0007") == b"v-name0007"
        server.kill()
        server.restart()  # more queue files than descriptors: it starts
        with BlockingClient(server.address) as client:
            assert client.get(b"name1499") == b"v-name1499"
            assert client.get(b"name0000") == b"v-name0000"
        assert server.terminate() == 0
        assert b"Traceback" not in server.output
    finally:
        server.kill()
