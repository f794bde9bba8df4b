"""The `early_stopping` node: its checks, and the tracker that says when a run has stopped improving."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sweeps.schema import direction_for
from sweeps.schema.early_stopping import EarlyStoppingConfig


def problems(cfg: EarlyStoppingConfig, eval_every: int) -> list[str]:
    errors = []
    if cfg.patience is not None and cfg.patience < 0:
        errors.append(f"early_stopping.patience={cfg.patience}: evaluations without improvement, >= 1 (0 or null: off)")
    if cfg.min_delta < 0:
        errors.append(f"early_stopping.min_delta={cfg.min_delta}: must be >= 0, e.g. 0.001")
    if cfg.patience and eval_every == 0:
        errors.append(
            f"early_stopping.patience={cfg.patience}: needs evaluations during the run; set eval_every=N (steps)"
        )
    return errors


@dataclass
class EarlyStopping:
    """Counts evaluations without an improvement of the objective (by more than `min_delta`, in its direction);
    `best_step` is the best evaluation's. Its fields travel in checkpoints."""

    patience: int = 0  # 0: never stops the run
    min_delta: float = 0.0
    maximize: bool = True
    best: float | None = None
    best_step: int | None = None
    since_best: int = 0

    @classmethod
    def from_config(cls, cfg: EarlyStoppingConfig, objective: str) -> EarlyStopping:
        return cls(cfg.patience or 0, cfg.min_delta, direction_for(objective) == "maximize")

    @property
    def active(self) -> bool:
        return self.patience > 0

    def update(self, step: int, value: float) -> bool:
        """Record an evaluation; True when it is the best so far."""
        if self.best is None or (value - self.best if self.maximize else self.best - value) > self.min_delta:
            self.best, self.best_step, self.since_best = value, step, 0
            return True
        self.since_best += 1
        return False

    @property
    def exhausted(self) -> bool:
        """Patience has run out: stop the run."""
        return self.active and self.since_best >= self.patience

    def state(self) -> dict:
        return asdict(self)

    def restore(self, state: dict) -> None:
        for key in ("best", "best_step", "since_best"):
            if key in state:
                setattr(self, key, state[key])
