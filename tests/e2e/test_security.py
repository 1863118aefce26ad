"""Authentication and TLS as an operator uses them: `starlingpy passwd`,
`serve --auth-file` reloaded by SIGHUP, the start-up warning, and the
supervisor with a worker pool against an authenticated TLS server."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

from starlingpy.client import AuthenticationFailed, Client
from starlingpy.worker.tasks import TaskMessage
from tests.e2e.tier_helpers import logs, starlingpy, tier_status, write_tier_config
from tests.support import REPO, BlockingClient, ServerProcess, wait_until
from tests.tls_support import TestCA


def passwd(path: Path, user: str, password: str, *grants: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "starlingpy", "passwd", str(path), user, "--stdin"]
    args += [f"--grant={grant}" for grant in grants]
    return subprocess.run(args, input=password + "\n", capture_output=True, text=True, cwd=REPO,
                          timeout=60, check=False)


def login(address: str, user: str, password: str) -> bytes:
    with BlockingClient(address) as client:
        data = f"{user} {password}".encode()
        return client.call(b"set auth 0 0 %d\r\n%s\r\n" % (len(data), data))


def test_passwd_writes_hashes_only_and_sighup_reloads_the_file(tmp_path):
    auth = tmp_path / "auth"
    done = passwd(auth, "web", "first secret", "set=grading*")
    assert done.returncode == 0, done.stderr
    assert passwd(auth, "ops", "ops secret", "get,set=*", "admin").returncode == 0
    text = auth.read_text()
    assert "first secret" not in text and "ops secret" not in text
    assert text.startswith("web scrypt$") and "set=grading*" in text
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    bad = passwd(auth, "a/b", "x")
    assert bad.returncode == 2 and "bad user name" in bad.stderr and auth.read_text() == text

    with ServerProcess(tmp_path / "spool", "--auth-file", str(auth)) as server:
        assert login(server.address, "web", "first secret") == b"STORED\r\n"
        assert login(server.address, "web", "wrong") == b"CLIENT_ERROR authentication failure\r\n"

        assert passwd(auth, "web", "second secret").returncode == 0  # grants kept
        assert "set=grading*" in auth.read_text()
        server.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: login(server.address, "web", "second secret") == b"STORED\r\n",
                   timeout=10, message="the new password after SIGHUP")

        auth.write_text(auth.read_text() + "broken\n")
        lines = auth.read_text().count("\n")
        server.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: b"auth file not reloaded" in server.output, timeout=10,
                   message="the bad file refused")
        assert f"{auth}:{lines}: expected: USER HASH".encode() in server.output
        assert login(server.address, "web", "second secret") == b"STORED\r\n"  # old file in force
        assert server.proc.poll() is None


def test_listening_beyond_loopback_without_auth_warns(tmp_path):
    pid_file = tmp_path / "run" / "server.pid"
    with ServerProcess(tmp_path / "spool", "-P", str(pid_file), host="0.0.0.0") as server:
        assert b"without --auth-file: anyone who can reach this port" in server.output
        assert stat.S_IMODE(pid_file.stat().st_mode) == 0o600
    with ServerProcess(tmp_path / "spool2") as server:  # loopback: no warning
        assert b"without --auth-file" not in server.output


def test_a_bad_auth_file_stops_the_server_at_start(tmp_path):
    (tmp_path / "auth").write_text("web plain-text\n")
    result = starlingpy("serve", "-p", "0", "-q", str(tmp_path / "spool"), "--auth-file",
                        str(tmp_path / "auth"))
    assert result.returncode == 1
    assert f"{tmp_path / 'auth'}:1: password hash must be scrypt" in result.stderr


TASKS = '''
from pathlib import Path
from starlingpy.client import Client
from starlingpy.worker.tasks import TaskSet
tasks = TaskSet("secure", client_factory=lambda: Client(["127.0.0.1:1"]))

@tasks.task(queue="jobs")
def note(path, text):
    Path(path).write_text(text)
'''


def test_supervisor_and_worker_pool_against_an_authenticated_tls_server(tmp_path):
    ca = TestCA(tmp_path / "ca")
    server_cert = ca.issue("server", server=True)
    auth = tmp_path / "auth"
    assert passwd(auth, "worker", "worker pw", "get,set=jobs,failed").returncode == 0
    assert passwd(auth, "web", "web pw", "set=jobs").returncode == 0
    credentials = tmp_path / "credentials.toml"
    credentials.write_text(f'username = "worker"\npassword = "worker pw"\ntls_ca = "{ca.cert}"\n')
    credentials.chmod(0o600)
    (tmp_path / "secure_tasks.py").write_text(TASKS)
    config = write_tier_config(tmp_path, supervisor='credentials = "credentials.toml"\n', pools=textwrap.dedent(
        """\
        [pools.secure]
        module = "secure_tasks"
        queues = ["jobs"]
        instances = 2
        """))
    config.write_text(config.read_text().replace('sync = "never"\n', textwrap.dedent(f"""\
        sync = "never"
        auth_file = "{auth}"
        tls_cert = "{server_cert.cert}"
        tls_key = "{server_cert.key}"
        """)))
    try:
        up = starlingpy("up", "-c", str(config))
        assert up.returncode == 0, up.stderr + logs(config)
        address = tier_status(config)["server_address"]
        with Client([address], username="web", password="web pw", tls=ca.client_context()) as web:
            for i in range(4):
                web.set("jobs", TaskMessage(task="note", args=(str(tmp_path / f"done{i}"), f"job {i}")).to_dict())
        wait_until(lambda: all((tmp_path / f"done{i}").exists() for i in range(4)), timeout=60,
                   message="the workers ran every job\n" + logs(config))
        assert [(tmp_path / f"done{i}").read_text() for i in range(4)] == [f"job {i}" for i in range(4)]
        status = starlingpy("status", "-c", str(config), "--json")
        assert '"jobs": 0' in status.stdout, status.stdout + status.stderr  # stats over TLS, logged in

        env = dict(os.environ, STARLINGPY_CREDENTIALS=str(credentials))
        stats = subprocess.run([sys.executable, "-m", "starlingpy", "stats", address], env=env,
                               capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
        assert stats.returncode == 0, stats.stderr
        assert "jobs" in stats.stdout
        failed = subprocess.run([sys.executable, "-m", "starlingpy", "failed", "list", "--server", address],
                                env=env, capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
        assert failed.returncode == 0 and failed.stdout == "", failed.stderr  # logged in, nothing failed
        plain = starlingpy("stats", address)  # no credentials, no TLS: refused
        assert plain.returncode == 1

        wrong = Client([address], username="web", password="nope", tls=ca.client_context())
        try:
            raised = None
            try:
                wrong.set("jobs", {"x": 1})
            except AuthenticationFailed as error:
                raised = error
            assert raised is not None and "authentication failure" in str(raised)
        finally:
            wrong.close()
        server_log = (tmp_path / "log" / "server.log").read_text()
        assert "authenticated as worker" in server_log
        assert server_log.count("authentication failure") == 1, server_log
    finally:
        starlingpy("down", "-c", str(config))
