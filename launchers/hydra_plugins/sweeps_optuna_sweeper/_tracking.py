"""One MLflow parent run per study, when the app tracks with `sweeps.tracking` and has a `tracking` node.

The run id is kept as a study user attribute, so a resumed sweep logs into the same run. Trials get it
as SWEEPS_PARENT_RUN_ID. At the end the run gets the best value and parameters and Optuna's plots.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

if TYPE_CHECKING:
    from ._prepare import Plan

log = logging.getLogger(__name__)

RUN_ID_ATTR = "sweeps:mlflow_parent_run_id"


class ParentRun:
    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    @classmethod
    def start(cls, plan: Plan, study: optuna.Study) -> ParentRun | None:
        """The study's parent run, resumed or created (None when the app does not track)."""
        tracking_cfg = OmegaConf.select(plan.config, "tracking", default=None)
        if tracking_cfg is None:
            return None
        try:
            from sweeps import tracking
        except ImportError:
            return None
        from mlflow.tracking import MlflowClient

        experiment_id = tracking.use(tracking_cfg)
        client = MlflowClient()
        run_id = study.user_attrs.get(RUN_ID_ATTR)
        if run_id is not None:
            try:
                client.get_run(run_id)
                client.update_run(run_id, status="RUNNING")
                log.info(f"MLflow parent run {run_id} resumed")
                return cls(client, run_id)
            except Exception:
                log.warning(f"MLflow parent run {run_id} of this study is gone; starting a new one")
        opts = plan.opts
        tags = {
            "sweeps.study": plan.study_name,
            "sweeps.sampler": str(opts.sampler["name"]),
            "sweeps.pruner": plan.pruner_name,
            "sweeps.directions": ",".join(opts.directions),
            **({"sweeps.objective": ",".join(opts.metric)} if opts.metric else {}),
            "sweeps.kind": "sweep",
            **tracking.provenance_tags(),
        }
        run = client.create_run(experiment_id, run_name=plan.study_name, tags=tags)
        run_id = run.info.run_id
        study.set_user_attr(RUN_ID_ATTR, run_id)
        params = {f"space.{name}": str(d)[:6000] for name, d in plan.space.distributions.items()}
        params.update({f"fixed.{name}": line.split("=", 1)[1] for name, line in plan.space.fixed.items()})
        params.update(n_trials=str(opts.n_trials), workers=str(plan.slots), sampler_seed=str(opts.sampler.get("seed")))
        client.log_batch(run_id, params=_params(params))
        log.info(f"MLflow parent run {run_id}")
        return cls(client, run_id)

    def end(self, study: optuna.Study, results: dict[str, Any] | None, status: str) -> None:
        try:
            if results is not None:
                self._log_results(study, results)
                self._log_plots(study)
        except Exception as e:
            log.warning(f"MLflow parent run: could not log results ({e})")
        self.client.set_terminated(self.run_id, status=status)

    def _log_results(self, study: optuna.Study, results: dict[str, Any]) -> None:
        for state, count in results["trials"].items():
            self.client.log_metric(self.run_id, f"trials_{state.lower()}", count)
        if results.get("best_value") is not None:
            self.client.log_metric(self.run_id, "best_value", float(results["best_value"]))
            self.client.set_tag(self.run_id, "sweeps.best_trial", str(results["best_trial"]))
            for name, value in results["best_params"].items():
                self.client.set_tag(self.run_id, f"best.{name}", str(value))
        if results.get("solutions") is not None:
            self.client.set_tag(
                self.run_id, "sweeps.pareto_trials", ",".join(str(s["number"]) for s in results["solutions"])
            )

    def _log_plots(self, study: optuna.Study) -> None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete or len(study.directions) > 1:
            return
        plots = ["plot_optimization_history", "plot_parallel_coordinate"]
        if len(complete) > 1 and len(complete[0].params) > 1:
            plots.append("plot_param_importances")
        with tempfile.TemporaryDirectory() as tmp:
            for name in plots:
                for path in _render(study, name, Path(tmp)):
                    self.client.log_artifact(self.run_id, str(path), artifact_path="optuna")


def _params(params: dict[str, str]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(k, v) for k, v in params.items()]


def _render(study: optuna.Study, name: str, folder: Path) -> list[Path]:
    """The plot as HTML (plotly, when installed) or PNG (matplotlib)."""
    import warnings

    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import plotly  # noqa: F401

            figure = getattr(optuna.visualization, name)(study)
            path = folder / f"{name[5:]}.html"
            figure.write_html(str(path))
            written.append(path)
        except ImportError:
            pass
        except Exception as e:
            log.debug(f"{name}: {e}")
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            axes = getattr(optuna.visualization.matplotlib, name)(study)
            figure = axes.ravel()[0].figure if hasattr(axes, "ravel") else axes.figure
            path = folder / f"{name[5:]}.png"
            figure.savefig(path, bbox_inches="tight", dpi=100)
            plt.close(figure)
            written.append(path)
        except Exception as e:
            log.debug(f"{name}: {e}")
    return written
