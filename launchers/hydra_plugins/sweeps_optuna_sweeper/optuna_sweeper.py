"""`hydra/sweeper=sweeps_optuna`: the plugin class; the work lives in `_core`."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class SweepsOptunaSweeper(Sweeper):
    """Optuna study over a Hydra search space; see config.SweepsOptunaSweeperConf for the options."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def sweep(self, arguments: list[str]) -> Any:
        from ._core import run_sweep

        assert self.config is not None and self.hydra_context is not None
        assert self.task_function is not None
        return run_sweep(self, arguments)
