"""Schema of the `early_stopping` node; consumed by sweeps.early_stopping."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EarlyStoppingConfig:
    # Evaluations in a row without an improvement of `objective` that stop the run; null or 0: off. The run's
    # model is then the best evaluation's (its weights kept in checkpoints/best), as are its final metrics.
    patience: int | None = None
    # How much the objective must improve (in its direction) to count as an improvement.
    min_delta: float = 0.0
