"""Task functions for launchers built in-process (a module the project's wheel does not hold: sent by value)."""

from __future__ import annotations

import json
import os
import time
from typing import Any


def steps(cfg: Any) -> dict[str, Any]:
    """Report `cfg.steps` values to the progress file, `cfg.seconds` apart; return where it ran."""
    progress = os.environ.get("SWEEPS_PROGRESS_FILE")
    for step in range(1, int(cfg.steps) + 1):
        time.sleep(float(cfg.seconds))
        if progress:
            with open(progress, "a") as f:
                f.write(json.dumps({"step": step, "value": 1.0 / step}) + "\n")
    import sweeps

    return {"value": float(cfg.value), "sweeps": sweeps.__file__, "run_id": os.environ.get("SWEEPS_DATABRICKS_RUN_ID")}
