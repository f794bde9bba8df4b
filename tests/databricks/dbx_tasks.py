"""Task functions for launchers built in-process (a module the project's wheel does not hold: sent by value)."""

from __future__ import annotations

import time
from typing import Any

from sweeps import channel


def steps(cfg: Any) -> dict[str, Any]:
    """Report `cfg.steps` values to the progress file, `cfg.seconds` apart; return where it ran."""
    for step in range(1, int(cfg.steps) + 1):
        time.sleep(float(cfg.seconds))
        channel.report(step, 1.0 / step)
    import sweeps

    return {"value": float(cfg.value), "sweeps": sweeps.__file__, "run_id": channel.databricks_run_id()}
