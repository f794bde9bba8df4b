"""`hydra/launcher=sweeps_local`: each job in its own process, one job per slot at a time."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

if TYPE_CHECKING:
    from ._core import JobHandle, SlotPool

log = logging.getLogger(__name__)


class LocalLauncher(Launcher):
    """Runs jobs as local subprocesses. Besides Hydra's batch `launch()`, it offers `submit()`,
    `wait_any()` and `close()`, which an asynchronous sweeper uses to start a job as soon as a slot
    frees up."""

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

    def submit(self, overrides: Sequence[str], job_idx: int, env: Mapping[str, str] | None = None) -> JobHandle:
        """Start one job on a free slot (raises RuntimeError when every slot is busy)."""
        return self.pool().submit(overrides, job_idx, env or {})

    def wait_any(self, handles: Sequence[JobHandle], timeout: float | None = None) -> list[JobHandle]:
        """Wait until at least one of `handles` is done (or `timeout` seconds); return the done ones."""
        from ._core import wait_any

        return wait_any(handles, timeout)

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
