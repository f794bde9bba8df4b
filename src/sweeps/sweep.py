"""The `sweep` config group's hooks. Its presets (conf/sweep/*.yaml) select our sweeper (hydra/sweeper=sweeps_optuna,
launchers/hydra_plugins/sweeps_optuna_sweeper, whose config.py defines every option) and set `hydra.sweeper.*`,
naming these functions as its `preflight` and `finish`."""

from __future__ import annotations


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
