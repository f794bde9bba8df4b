"""`hydra/launcher=sweeps_local`: each job in its own process, one job per slot at a time; the work lives in
`_core`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from sweeps.launching import AsyncLauncher

if TYPE_CHECKING:
    from ._core import ProcessHandle, SlotPool

log = logging.getLogger(__name__)


class LocalLauncher(AsyncLauncher):
    """Runs jobs as local subprocesses, one per slot (a slot: GPUs and CPU threads of its own). Besides Hydra's
    batch `launch()`, it is an AsyncLauncher: an asynchronous sweeper starts a job as soon as a slot frees up."""

    poll_s: ClassVar[float] = 0.02

    def __init__(
        self,
        n_jobs: int | None = None,
        gpus_per_job: int = 1,
        threads_per_job: int | None = None,
        cancel_grace_s: float = 10.0,
        prestart: bool = True,
    ) -> None:
        self.n_jobs = n_jobs
        self.gpus_per_job = gpus_per_job
        self.threads_per_job = threads_per_job
        self.cancel_grace_s = cancel_grace_s
        self.prestart = prestart
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self._pool: SlotPool | None = None

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.close()
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from . import _core

        return _core.launch(self, job_overrides, initial_job_idx)

    @property
    def slots(self) -> int:
        """Number of jobs this launcher runs at once."""
        return self.pool().n_slots

    def submit(self, overrides: Sequence[str], job_idx: int, env: Mapping[str, str] | None = None) -> ProcessHandle:
        """Start one job on a free slot (raises RuntimeError when every slot is busy)."""
        return self.pool().submit(overrides, job_idx, env or {})

    def close(self) -> None:
        """Cancel running jobs and stop the prestarted processes."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def pool(self) -> SlotPool:
        if self._pool is None:
            from ._core import SlotPool

            self._pool = SlotPool(self)
        return self._pool

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pool"] = None
        return state
