"""The `sweep` config group: an Optuna study's settings, which conf/sweep/*.yaml hand to our sweeper
(hydra/sweeper=sweeps_optuna, launchers/hydra_plugins/sweeps_optuna_sweeper) through interpolation."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class SweepConfig:
    # Trials to finish (COMPLETE, PRUNED or FAIL), counting those of an earlier, interrupted run.
    n_trials: int = 20
    # Seconds after which no new trial starts; null: no limit.
    timeout: float | None = None
    # Trials at once; null: one per visible GPU (compute=local_gpus), else one.
    workers: int | None = None
    # tpe | random | grid | cmaes | nsgaii | qmc
    sampler: str = "tpe"
    # median | hyperband | successive_halving | none: stops trials whose eval metric lags.
    pruner: str = "median"
    # Steps a trial runs before the pruner may stop it, and trials that finish before pruning starts.
    n_warmup_steps: int = 0
    n_startup_trials: int = 5
    # maximize | minimize; follows `objective` (eval_loss is minimised).
    direction: str = MISSING
    seed: int | None = None
    # Rerunning with the same study name resumes it; null: derived from the search space and overrides.
    study_name: str | None = None
    # SQLAlchemy URL of the Optuna storage; null: sqlite under outputs/.
    storage: str | None = None
    # Stop starting trials once more than this fraction of n_trials has failed.
    max_failure_rate: float = 0.25


def direction_for(objective: str) -> str:
    """The direction that improves an objective (the `direction` resolver)."""
    return "minimize" if objective == "eval_loss" else "maximize"


def preflight(cfg) -> None:
    """Before a sweep's first trial: the training config, and the environment the deploy target needs."""
    from sweeps import deploy
    from sweeps.errors import ConfigError
    from sweeps.train import preflight as check_training

    check_training(cfg)
    missing = deploy.environment_problems(cfg.deploy)
    if missing:
        raise ConfigError(*missing)


def finish(cfg, study_name: str) -> None:
    """After a sweep: promote its best trial and deploy the champion (nothing with deploy=none)."""
    from sweeps import deploy

    deploy.after_sweep(cfg, study_name)
