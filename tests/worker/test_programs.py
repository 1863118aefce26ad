"""run_program against real programs: each limit, the process group, output
caps, and no inherited file descriptors (a real PostgreSQL socket)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest

from starlingpy.worker.programs import Limits, run_program
from tests.support import REPO, wait_until

# The program runs as `nobody` when we are root, so it must be an interpreter
# that uid can execute (the venv's may live under a private home directory).
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
FAST = Limits(cpu_seconds=1, wall_seconds=3)


def py(code: str) -> list[str]:
    return [PY, "-c", code]


def live_members(pgid: int) -> list[int]:
    """Pids of the group's processes that are not zombies (a killed orphan
    stays a zombie until init reaps it, which can take a while here)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:  # it went away meanwhile
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != b"Z":
            members.append(int(entry))
    return members


def group_is_empty(pgid: int) -> bool:
    """No live process of the group is left, waiting (with a deadline) for
    the SIGKILL, which is asynchronous, to take effect."""
    wait_until(lambda: not live_members(pgid), timeout=10, message=f"process group {pgid} to empty")
    return True


def test_correct_program_stdout_is_exact_and_stdin_fed():
    data = bytes(range(256)) * 4096  # 1 MiB of stdin, echoed back while we write
    result = run_program(py("import sys; d=sys.stdin.buffer.read(); sys.stdout.buffer.write(d[::-1]); "
                            "sys.stderr.write('done')"),
                         stdin=data, limits=Limits(stdout_bytes=2 * len(data)))
    assert result.ok
    assert result.stdout == data[::-1]
    assert result.stderr == b"done"
    assert (result.exit_code, result.signal, result.limit_hit) == (0, None, None)
    assert not result.stdout_truncated


def test_exit_code_and_minimal_environment_in_fresh_directory():
    result = run_program(["/bin/sh", "-c", "env; pwd; touch scratch; exit 3"])
    assert result.exit_code == 3 and result.limit_hit is None
    *env_lines, cwd = result.stdout.decode().splitlines()
    env = dict(line.split("=", 1) for line in env_lines)
    env.pop("PWD", None)  # sh adds its own
    assert env == {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C", "HOME": cwd}
    assert cwd.startswith(tempfile.gettempdir())
    assert not os.path.exists(cwd), "the temporary working directory is removed"


def test_files_are_placed_in_the_working_directory():
    result = run_program([PY, "main.py"], files={"main.py": b"print(open('input.txt').read() * 2)",
                                                 "input.txt": b"ab"})
    assert result.stdout == b"abab\n"


def test_missing_executable_raises():
    with pytest.raises(FileNotFoundError):
        run_program(["/nonexistent/program"])


def test_infinite_loop_stopped_by_cpu_limit():
    result = run_program(py("while True: pass"), limits=Limits(cpu_seconds=1, wall_seconds=60))
    assert result.limit_hit == "cpu", result
    assert result.signal in (signal.SIGXCPU, signal.SIGKILL), result
    assert result.cpu_time >= 0.5, result  # rusage and the rlimit tick are not exact


def test_sleeper_stopped_by_wall_limit():
    result = run_program(py("import time; time.sleep(60)"), limits=Limits(cpu_seconds=5, wall_seconds=0.5))
    assert result.limit_hit == "wall"
    assert result.signal == signal.SIGKILL
    assert group_is_empty(result.pid)


def test_memory_hog_stopped_by_address_space_limit():
    result = run_program(py("x = bytearray(1 << 30); print('allocated')"),
                         limits=Limits(address_space_bytes=256 * 1024 * 1024))
    assert result.limit_hit == "memory"
    assert b"allocated" not in result.stdout


def test_file_size_limit():
    result = run_program(py("f = open('big', 'wb')\nwhile True: f.write(b'x' * 65536)"),
                         limits=Limits(file_size_bytes=1024 * 1024))
    assert result.limit_hit == "file_size"


@pytest.mark.skipif(os.geteuid() != 0, reason="RLIMIT_NPROC needs an unprivileged uid of its own")
def test_fork_bomb_is_contained_and_leaves_no_process():
    # Every child sleeps (holds its slot); the leader forks until refused.
    bomb = ("import os, time, sys\n"
            "n = 0\n"
            "while True:\n"
            "    try:\n"
            "        pid = os.fork()\n"
            "    except OSError as e:\n"
            "        print(n, flush=True); raise\n"
            "    if pid == 0:\n"
            "        time.sleep(600); os._exit(0)\n"
            "    n += 1\n")
    result = run_program(py(bomb), limits=Limits(cpu_seconds=2, processes=16))
    assert result.limit_hit == "processes"
    assert 0 <= int(result.stdout) < 16
    assert group_is_empty(result.pid), "the sleeping children were killed with the group"


def test_children_left_behind_are_killed_after_exit():
    # The program exits at once but leaves a grandchild sleeping in its group.
    result = run_program(py("import os, time\nif os.fork() == 0:\n    time.sleep(600)\nprint('parent done')"),
                         limits=FAST)
    assert result.exit_code == 0 and result.stdout == b"parent done\n"
    assert group_is_empty(result.pid)


def test_huge_stdout_is_capped_without_deadlock():
    # 100 MB to stdout and stderr at once; nothing reads our stdin.
    code = ("import sys\nchunk = b'y' * 1048576\nfor _ in range(100):\n"
            "    sys.stdout.buffer.write(chunk); sys.stderr.buffer.write(chunk[:1000])")
    result = run_program(py(code), stdin=b"z" * (4 * 1048576), limits=Limits(stdout_bytes=1048576))
    assert result.limit_hit == "output"
    assert result.stdout_truncated and len(result.stdout) == 1048576
    assert set(result.stdout) == {ord("y")}
    assert group_is_empty(result.pid)


def test_program_cannot_read_the_workers_database_socket():
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=5) as conn:
        fd = conn.pgconn.socket
        os.fstat(fd)  # it is open here...
        probe = (f"import os, errno\ntry:\n    os.fstat({fd}); print('open')\n"
                 f"except OSError as e:\n    print(errno.errorcode[e.errno])\n"
                 f"print(sorted(int(x) for x in os.listdir('/proc/self/fd')))")
        result = run_program(py(probe), limits=FAST)
        assert conn.execute("select 1").fetchone() == (1,)  # ...and still works after
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "EBADF"
    assert eval(lines[1]) == [0, 1, 2, 3]  # 3: listdir's own handle on /proc/self/fd


def test_a_worker_mapping_more_than_the_limit_can_still_start_programs():
    import mmap
    reserved = mmap.mmap(-1, 1 << 30)  # 1 GiB of address space, never touched
    try:
        result = run_program(py("print('small')"), limits=Limits(address_space_bytes=256 * 1024 * 1024))
    finally:
        reserved.close()
    assert result.ok and result.stdout == b"small\n"


def processes_of(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    status = f.read()
            except OSError:
                continue
            uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()
            state = next(line for line in status.splitlines() if line.startswith("State:")).split()[1]
            if int(uids[1]) == uid and state != "Z":
                found.append(int(entry))
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as a dedicated uid")
def test_exclusive_uid_kills_processes_that_left_the_group():
    uid = 61990 + os.getpid() % 9  # a uid nothing else on this machine uses
    escape = ("import os, time\n"
              "if os.fork() == 0:\n"
              "    os.setsid()\n"
              "    if os.fork() == 0:\n"
              "        os.close(1); os.close(2); time.sleep(600)\n"
              "    os._exit(0)\n"
              "os.wait(); print('escaped')")
    result = run_program(py(escape), limits=Limits(cpu_seconds=1, wall_seconds=5, run_as_uid=uid,
                                                   run_as_gid=uid, exclusive_uid=True))
    assert result.stdout == b"escaped\n"
    wait_until(lambda: not processes_of(uid), timeout=10, message=f"uid {uid} to have no process")


def test_run_program_outside_a_worker_leaves_no_zombies_and_no_subreaper(tmp_path):
    """A caller that is no worker (no subreaper of its own): the program's
    children, killed with its group, are reaped before run_program returns."""
    script = tmp_path / "caller.py"
    script.write_text(textwrap.dedent("""
        import json, os
        from starlingpy.process.reaper import children, is_subreaper
        from starlingpy.worker.programs import run_program
        program = "for i in 1 2 3 4 5 6; do (sleep 60 &) ; sleep 60 & done; exit 0"
        result = run_program(["/bin/sh", "-c", program])
        try:
            os.killpg(result.pid, 0)
            group_left = True
        except ProcessLookupError:
            group_left = False
        print(json.dumps({"children": children(os.getpid()), "group_left": group_left,
                          "subreaper": is_subreaper(), "exit": result.exit_code}))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == {"children": {}, "group_left": False, "subreaper": False, "exit": 0}
