"""The supervisor's state file: what runs, since when, how often it was
restarted. The supervisor rewrites it on every change; ``status`` reads it.

It is JSON in the run directory, replaced atomically (temp file + rename) so
a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from starlingpy.process.managed import ProcessRecord

__all__ = ["ProcessRecord", "TierState", "load_state", "remove_state", "save_state"]

STATE_FILE = "state.json"


@dataclass
class TierState:
    """Everything ``status`` needs besides the queue sizes."""

    supervisor_pid: int
    started_at: float
    config: str
    server_address: str
    processes: list[ProcessRecord] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TierState:
        data = json.loads(text)
        processes = [ProcessRecord(**p) for p in data.pop("processes", [])]
        return cls(processes=processes, **data)


def save_state(run_dir: Path, state: TierState) -> None:
    """Replace the state file atomically."""
    run_dir.mkdir(parents=True, exist_ok=True)
    temp = run_dir / f".{STATE_FILE}.tmp"
    temp.write_text(state.to_json())
    os.replace(temp, run_dir / STATE_FILE)


def load_state(run_dir: Path) -> TierState | None:
    """The last saved state, or None if there is none (or it is unreadable)."""
    try:
        return TierState.from_json((run_dir / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError, TypeError):
        return None


def remove_state(run_dir: Path) -> None:
    """Remove the state file if there is one (the tier is down)."""
    (run_dir / STATE_FILE).unlink(missing_ok=True)
