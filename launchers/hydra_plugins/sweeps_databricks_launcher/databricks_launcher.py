"""`hydra/launcher=sweeps_databricks`: each job a one-time run on a Databricks cluster; the work lives in `_core`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from sweeps.launching import AttachableLauncher

if TYPE_CHECKING:
    from ._core import RunHandle, Session


class DatabricksLauncher(AttachableLauncher):
    """Runs jobs through the Jobs API (runs/submit). Besides Hydra's batch `launch()`, it is an
    AttachableLauncher: its runs go on when the driver stops, and a later driver attaches to them by run id;
    see config.DatabricksLauncherConf."""

    poll_s: ClassVar[float] = 0.05

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self._session: Session | None = None

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
        """Runs this launcher keeps going at once (checks the workspace on first use)."""
        return self.session().slots

    def submit(self, overrides: Sequence[str], job_idx: int, env: Mapping[str, str] | None = None) -> RunHandle:
        """Submit one job as a Databricks run; the handle has `run_id`, `run_page_url` and `external_id`."""
        return self.session().submit(overrides, job_idx, env or {})

    def attach(self, external_id: str | int, job_idx: int, env: Mapping[str, str] | None = None) -> RunHandle:
        """A handle on a run submitted earlier (by a driver that stopped), by its run id; raises LookupError
        when the workspace does not know it."""
        return self.session().attach(external_id, job_idx, env or {})

    def close(self) -> None:
        """Cancel the runs still going and forget the session."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def session(self) -> Session:
        """The connection to the workspace, checked on first use (bad input: ConfigError)."""
        if self._session is None:
            from ._core import Session

            self._session = Session(self)
        return self._session

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_session"] = None
        return state
