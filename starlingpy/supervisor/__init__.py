"""The supervisor: one config file and one command for the whole background
tier (the queue server and every worker pool).

Public API::

    from starlingpy.supervisor import load_tier, up, down, status, restart
    tier = load_tier("starlingpy.toml")   # ConfigError names key and line
    up(tier, foreground=False)            # -> exit code; detaches by default
    status(tier, as_json=False)           # -> 0 running, 3 not running
    down(tier)                            # workers warm, then cold, then the server

See the README, "The supervisor".
"""

from starlingpy.supervisor.config import (
           PoolConfig,
           SupervisorSettings,
           TierConfig,
           load_tier,
)
from starlingpy.supervisor.control import (
           down,
           reload_workers,
           restart,
           status,
           status_report,
           up,
)

__all__ = [
           "PoolConfig",
           "SupervisorSettings",
           "TierConfig",
           "down",
           "load_tier",
           "reload_workers",
           "restart",
           "status",
           "status_report",
           "up",
]
