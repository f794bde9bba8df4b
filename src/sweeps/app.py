"""The Hydra entry point around train(): composes conf/, validates, runs or sweeps."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from sweeps import errors
from sweeps.compose import conf_dir
from sweeps.schema import register

register()


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def train_app(cfg: DictConfig) -> float:
    """Hydra's task function: one run of sweeps.train.train."""
    errors.mark_started()
    from sweeps.train import train

    with errors.exit_on_config_error():
        return train(cfg)
