"""Run an untrusted external program under limits (the grader's helper).

``run_program(argv, stdin=b"...", limits=Limits(cpu_seconds=2))`` runs one
program and returns a :class:`ProgramResult`: its stdout and stderr, exit code
or signal, wall and CPU time, and which limit (if any) stopped it.

How each promise is kept
------------------------
- **Limits** are rlimits set in the child between ``fork`` and ``exec``
  (``preexec_fn``; it only calls ``setrlimit``, address space last, so a
  forked copy of a large worker never allocates past the limit; like every
  ``preexec_fn`` it assumes no other thread of the caller holds an interpreter
  lock at fork time, true of the single-threaded worker): CPU (soft limit sends
  SIGXCPU, one second later the hard limit SIGKILLs), address space, file
  size, open files, processes, core size 0. The wall limit and the output caps
  are enforced here, in the parent.
- **Processes.** ``RLIMIT_NPROC`` counts every process of the *real uid*
  machine-wide and is not enforced for root. So when we run as root the
  program runs as an unprivileged uid (``nobody``, 65534, by default;
  ``Limits.run_as_uid``) and the fresh working directory is given to it.
  Processes of that uid elsewhere on the machine count against the limit.
- **Process group.** The program leads a new session (so a new group). On the
  wall limit, on output overflow, and *always* once the program has exited,
  the whole group gets SIGKILL: a program that forks cannot leave children
  behind. The caller is made a child subreaper (Linux) for the run, so the
  group's killed members come to it rather than to PID 1 (which in a
  container may never reap them), and they are reaped before
  ``run_program`` returns: no zombies, in a worker or anywhere else.
  (A descendant that calls ``setsid()`` itself leaves the group;
  ``Limits(exclusive_uid=True)``, for a uid used by nothing else, kills every
  process of that uid after the run, which catches those too.) The group is killed while
  the leader is still an unreaped zombie, so its pid (the group id) cannot
  have been reused by then.
- **Output** is read from non-blocking pipes in one ``selectors`` loop that
  also feeds stdin and watches a pidfd for the exit, so a program writing
  megabytes while we write its stdin never deadlocks. Past the cap
  (``Limits.stdout_bytes`` / ``stderr_bytes``) the program is **killed**
  (``limit_hit="output"``), not drained: a runaway ``print`` loop would
  otherwise run until the wall limit. The captured bytes stop exactly at the
  cap and ``stdout_truncated`` / ``stderr_truncated`` say so.
- **No inherited files.** ``close_fds=True``: only fds 0, 1, 2 reach the
  program; database sockets and everything else of the worker stay behind.
- **Environment.** By default a minimal one (``PATH``, ``LANG=C``,
  ``HOME=<cwd>``) and a fresh temporary directory as ``cwd``, removed
  afterwards. ``files=`` writes files into that directory first (e.g. the
  submitted source) so an unprivileged program can read them.

Which limit was hit is certain for ``wall``, ``output`` and ``cpu`` (signal or
CPU time used) and for ``file_size`` when the program died of SIGXFSZ. For
``memory`` and ``processes`` the kernel only makes an allocation or ``fork``
fail, and the program decides what to do; we infer them from its death
(SIGSEGV/SIGABRT for memory) or from the usual error text on stderr
(``MemoryError``, ``Cannot allocate memory``, ``Resource temporarily
unavailable``, ``File too large``). Treat those two as best effort.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Literal

from starlingpy.process.reaper import adopting_orphans, reap_group

__all__ = ["Limits", "ProgramResult", "LimitHit", "run_program"]

LimitHit = Literal["wall", "cpu", "memory", "output", "file_size", "processes"]

MiB = 1024 * 1024
_NOBODY = 65534
# After the leader exits and the group is killed, pipes reach EOF at once;
# this bound only matters if a descendant escaped the group (setsid) and
# still holds a pipe open.
_DRAIN_GRACE_SECONDS = 1.0
_CHUNK = 65536


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits for one program run. ``None`` disables a limit.

    ``wall_seconds`` defaults to ``2 * cpu_seconds + 2``.
    ``run_as_uid``/``run_as_gid`` apply only when we are root (``None`` there:
    stay root, and then ``processes`` is not enforced by the kernel).
    """

    cpu_seconds: float | None = 5.0
    wall_seconds: float | None = None
    address_space_bytes: int | None = 512 * MiB
    processes: int | None = 32
    stdout_bytes: int = 1 * MiB
    stderr_bytes: int = 1 * MiB
    file_size_bytes: int | None = 16 * MiB
    open_files: int | None = 64
    run_as_uid: int | None = _NOBODY
    run_as_gid: int | None = _NOBODY
    # True only when run_as_uid belongs to this run alone (e.g. one uid per
    # worker instance): then, after the run, every process of that uid is
    # killed, including any that left the process group with setsid().
    exclusive_uid: bool = False

    @property
    def effective_wall_seconds(self) -> float | None:
        if self.wall_seconds is not None:
            return self.wall_seconds
        if self.cpu_seconds is None:
            return None
        return 2 * self.cpu_seconds + 2

    def rlimits(self) -> list[tuple[int, tuple[int, int]]]:
        """The (resource, (soft, hard)) pairs applied in the child."""
        pairs = [(resource.RLIMIT_CORE, (0, 0))]
        if self.cpu_seconds is not None:
            soft = max(1, int(-(-self.cpu_seconds // 1)))  # whole seconds, rounded up
            pairs.append((resource.RLIMIT_CPU, (soft, soft + 1)))
        if self.processes is not None:
            pairs.append((resource.RLIMIT_NPROC, (self.processes,) * 2))
        if self.file_size_bytes is not None:
            pairs.append((resource.RLIMIT_FSIZE, (self.file_size_bytes,) * 2))
        if self.open_files is not None:
            pairs.append((resource.RLIMIT_NOFILE, (self.open_files,) * 2))
        if self.address_space_bytes is not None:
            # Last: the forked copy of the worker may already map more than
            # the limit, so after this it must not allocate before exec.
            pairs.append((resource.RLIMIT_AS, (self.address_space_bytes,) * 2))
        return pairs


@dataclasses.dataclass(frozen=True)
class ProgramResult:
    """What one program run produced. ``exit_code`` is None when it died of a
    signal (then ``signal`` is the signal number)."""

    stdout: bytes
    stderr: bytes
    exit_code: int | None
    signal: int | None
    wall_time: float
    cpu_time: float
    limit_hit: LimitHit | None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    pid: int = 0  # also the process group id (already killed and reaped)

    @property
    def ok(self) -> bool:
        """Exited 0 with no limit hit."""
        return self.exit_code == 0 and self.limit_hit is None


def default_env(cwd: str) -> dict[str, str]:
    """The minimal environment a program gets unless ``env=`` is given."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C", "HOME": cwd}


def run_program(argv: Sequence[str], stdin: bytes = b"", *, cwd: str | os.PathLike | None = None,
                env: Mapping[str, str] | None = None, limits: Limits | None = None,
                files: Mapping[str, bytes] | None = None) -> ProgramResult:
    """Run ``argv`` under ``limits`` and return what happened.

    ``stdin`` is written to the program's standard input, then closed.
    ``cwd``: the working directory; by default a fresh temporary directory,
    removed afterwards. ``env``: the whole environment (default
    :func:`default_env`). ``files``: name -> bytes written into ``cwd`` first.

    Error handling: a program that cannot be started raises ``OSError``
    (``FileNotFoundError`` for a missing executable) after cleaning up; a
    program that fails in any other way is a result, not an exception.

    Resource handling: the program's whole process group is killed and the
    program reaped before this returns; the temporary directory is removed.
    """
    limits = limits or Limits()
    own_dir = cwd is None
    workdir = tempfile.mkdtemp(prefix="starlingpy-run-") if own_dir else os.fspath(cwd)
    try:
        user = _run_as(limits)
        if files:
            for name, data in files.items():
                path = os.path.join(workdir, name)
                if os.path.dirname(os.path.abspath(path)) != os.path.abspath(workdir):
                    raise ValueError(f"file name must be a plain name: {name!r}")
                with open(path, "wb") as f:
                    f.write(data)
        if own_dir and user is not None:
            _give_tree(workdir, *user)
        try:
            with adopting_orphans():
                return _run(list(argv), stdin, workdir,
                            dict(env) if env is not None else default_env(workdir), limits, user)
        finally:
            if user is not None and limits.exclusive_uid:
                _kill_every_process_of(*user)
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def _run_as(limits: Limits) -> tuple[int, int] | None:
    if os.geteuid() != 0 or limits.run_as_uid is None:
        return None
    gid = limits.run_as_gid if limits.run_as_gid is not None else limits.run_as_uid
    return limits.run_as_uid, gid


def _kill_every_process_of(uid: int, gid: int) -> None:
    """SIGKILL every process of ``uid`` from a short-lived child running as
    that uid (``kill(-1)`` reaches exactly the processes of one's own uid,
    never the caller). Repeated, because a fork bomb may fork during a sweep."""
    pid = os.fork()
    if pid == 0:  # only syscalls here, then _exit
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            for _ in range(100):
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    break
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _give_tree(path: str, uid: int, gid: int) -> None:
    for root, _dirs, names in os.walk(path):
        os.chown(root, uid, gid)
        for name in names:
            os.chown(os.path.join(root, name), uid, gid)


def _make_preexec(pairs: list[tuple[int, tuple[int, int]]]):
    setrlimit = resource.setrlimit  # bound now: the child must not import anything

    def apply_limits() -> None:
        for which, values in pairs:
            setrlimit(which, values)

    return apply_limits


def _run(argv: list[str], stdin: bytes, cwd: str, env: dict[str, str], limits: Limits,
         user: tuple[int, int] | None) -> ProgramResult:
    identity = {}
    if user is not None:
        identity = {"user": user[0], "group": user[1], "extra_groups": []}
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=cwd, env=env, close_fds=True, start_new_session=True, restore_signals=True,
        preexec_fn=_make_preexec(limits.rlimits()), **identity)
    pidfd = os.pidfd_open(proc.pid)
    try:
        capture = _Capture(proc, pidfd, stdin, limits)
        capture.run(started)
        # The leader has exited (it is a zombie until wait4): kill what it left.
        _killpg(proc.pid)
        capture.drain_after_exit()
        reap_group(proc.pid)  # the killed members we adopted, until only the leader is left
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # we reaped it; tell Popen
    finally:
        os.close(pidfd)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        if proc.returncode is None and _is_alive(proc.pid):
            _killpg(proc.pid)
            proc.wait()
    wall = time.monotonic() - started
    cpu = usage.ru_utime + usage.ru_stime
    exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    stdout, stderr = bytes(capture.out[1]), bytes(capture.out[2])
    hit = capture.limit_hit or _infer_limit(limits, exit_code, sig, cpu, stderr)
    return ProgramResult(stdout=stdout, stderr=stderr, exit_code=exit_code, signal=sig,
                         wall_time=wall, cpu_time=cpu, limit_hit=hit,
                         stdout_truncated=capture.truncated[1], stderr_truncated=capture.truncated[2],
                         pid=proc.pid)


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _is_alive(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False


class _Capture:
    """The selector loop: feed stdin, read stdout/stderr into capped buffers,
    notice the exit (pidfd) and the wall deadline."""

    def __init__(self, proc: subprocess.Popen, pidfd: int, stdin: bytes, limits: Limits) -> None:
        self.proc = proc
        self.pidfd = pidfd
        self.limits = limits
        self.caps = {1: limits.stdout_bytes, 2: limits.stderr_bytes}
        self.out = {1: bytearray(), 2: bytearray()}
        self.truncated = {1: False, 2: False}
        self.limit_hit: LimitHit | None = None
        self.pending = memoryview(stdin)
        self.sel = selectors.DefaultSelector()
        self.fd_stream = {proc.stdout.fileno(): 1, proc.stderr.fileno(): 2}
        for fd in self.fd_stream:
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ)
        self.stdin_fd = proc.stdin.fileno()
        if self.pending:
            os.set_blocking(self.stdin_fd, False)
            self.sel.register(self.stdin_fd, selectors.EVENT_WRITE)
        else:
            self._close_stdin()
        self.sel.register(pidfd, selectors.EVENT_READ)

    def run(self, started: float) -> None:
        wall = self.limits.effective_wall_seconds
        deadline = None if wall is None else started + wall
        exited = False
        while not exited:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = self.sel.select(timeout)
            if not events and deadline is not None and time.monotonic() >= deadline:
                self._stop("wall")
                deadline = None  # the kill is sent; now wait for the exit itself
                continue
            for key, _ in events:
                fd = key.fd
                if fd == self.pidfd:
                    exited = True
                elif fd == self.stdin_fd:
                    self._feed()
                else:
                    self._read(fd)

    def drain_after_exit(self) -> None:
        """Read what is left in the pipes once every writer is dead."""
        self.sel.unregister(self.pidfd)
        if self.stdin_fd in self.sel.get_map():
            self._close_stdin()
        deadline = time.monotonic() + _DRAIN_GRACE_SECONDS
        while self.fd_stream and time.monotonic() < deadline:
            for key, _ in self.sel.select(max(0.0, deadline - time.monotonic())):
                self._read(key.fd)
        self.sel.close()

    def _stop(self, why: LimitHit) -> None:
        if self.limit_hit is None:
            self.limit_hit = why
        _killpg(self.proc.pid)

    def _feed(self) -> None:
        try:
            written = os.write(self.stdin_fd, self.pending[:_CHUNK])
        except BlockingIOError:
            return
        except BrokenPipeError:  # the program closed its stdin: fine
            self._close_stdin()
            return
        self.pending = self.pending[written:]
        if not self.pending:
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self.stdin_fd in self.sel.get_map():
            self.sel.unregister(self.stdin_fd)
        self.proc.stdin.close()

    def _read(self, fd: int) -> None:
        stream = self.fd_stream[fd]
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        if not data:
            self.sel.unregister(fd)
            del self.fd_stream[fd]
            return
        buf, cap = self.out[stream], self.caps[stream]
        room = cap - len(buf)
        if len(data) > room:
            buf += data[:max(room, 0)]
            self.truncated[stream] = True
            self._stop("output")
        else:
            buf += data


_MEMORY_TEXT = (b"MemoryError", b"Cannot allocate memory", b"std::bad_alloc", b"out of memory")
_NPROC_TEXT = (b"Resource temporarily unavailable", b"BlockingIOError", b"fork: retry")


def _infer_limit(limits: Limits, exit_code: int | None, sig: int | None, cpu: float,
                 stderr: bytes) -> LimitHit | None:
    if sig == signal.SIGXCPU or (limits.cpu_seconds is not None and sig == signal.SIGKILL
                                 and cpu >= limits.cpu_seconds):
        return "cpu"
    if sig == signal.SIGXFSZ:
        return "file_size"
    if exit_code == 0:
        return None
    if limits.address_space_bytes is not None and (
            sig in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS)
            or any(text in stderr for text in _MEMORY_TEXT)):
        return "memory"
    if limits.file_size_bytes is not None and b"File too large" in stderr:
        return "file_size"
    if limits.processes is not None and any(text in stderr for text in _NPROC_TEXT):
        return "processes"
    return None
