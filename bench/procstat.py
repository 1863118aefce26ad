"""Another process's CPU time and memory, read from ``/proc``.

CPU is ``utime + stime`` of ``/proc/<pid>/stat`` (fields 14 and 15, in clock
ticks, summed over all the process's threads by the kernel), so it is only as
fine as one tick (10 ms): the scenarios run enough operations for that to be
noise.
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds the process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; fields after it are fixed.
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 overall
    return utime / TICKS_PER_SECOND, stime / TICKS_PER_SECOND


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    return sum(cpu_times(pid))


def rss_bytes(pid: int) -> int:
    """Resident set size (``VmRSS``) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def pids_named(name: str) -> list[int]:
    """Pids whose ``/proc/<pid>/comm`` is ``name`` (like ``pidof``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue  # it exited while we looked
    return sorted(found)
