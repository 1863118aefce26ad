"""Where the server's time goes: py-spy attached during a scenario.

``python -m bench --profile DIR`` samples the starlingpy server with py-spy
(``pip install py-spy`` into the venv; it is not a project dependency) while
each of its scenarios runs, keeps the collapsed stacks in
``DIR/<scenario>.txt``, and prints the top functions by own time and by
inclusive time. Sampling is ``--nonblocking`` so the server is not paused.
"""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")
SAMPLE_RATE = 250


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter, or on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Sampler:
    """``py-spy record`` on ``pid`` from ``start()`` until ``stop()``."""

    def __init__(self, pid: int, output: Path) -> None:
        self.pid, self.output = pid, output
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "record", "-p", str(self.pid), "-o", str(self.output), "--format", "raw",
             "-r", str(SAMPLE_RATE), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        if self.proc is not None:
            self.proc.wait(timeout=60)


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    return f"{match['func']} ({match['file']})" if match else frame.strip()


def summarize(collapsed: Path, top: int = 12) -> str:
    """Top functions by own and by inclusive samples, from collapsed stacks."""
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return f"{collapsed.name}: no samples"
    lines = [f"{collapsed.stem}: {total} samples (own %, inclusive %)"]
    for name, count in own.most_common(top):
        lines.append(f"  own {100 * count / total:5.1f}%  {name}")
    skip = {"_run_module_as_main (<frozen runpy>)", "_run_code (<frozen runpy>)"}
    shown = 0
    for name, count in inclusive.most_common():
        if name in skip or count == total:
            continue  # the entry points every stack shares say nothing
        lines.append(f"  incl {100 * count / total:5.1f}%  {name}")
        shown += 1
        if shown == top:
            break
    return "\n".join(lines)
