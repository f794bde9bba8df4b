"""`python -m sweeps promote`: the choice of the run to promote (the best finished, evaluated trial of a sweep, or a
given run), registered by sweeps.registry, where the `champion` alias moves to it only when it beats the current
champion on the same eval set; otherwise it becomes the `challenger`.

python -m sweeps promote                   the best trial of the latest sweep (of all runs when there is no sweep)
python -m sweeps promote --sweep STUDY     the best trial of that sweep
python -m sweeps promote --run RUN_ID      that run
Hydra-style overrides choose the store and the registered model, e.g. tracking.uri=http://... registry.model_name=imdb
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from sweeps import registry
from sweeps.compose import compose
from sweeps.errors import EXIT_BAD_INPUT, ConfigError, report

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from sweeps.registry import Promotion

# Runs that are not trials: a sweep's parent run, a deployment's run.
NOT_TRIALS = ("sweep", "deploy")


def promote_best(
    cfg: DictConfig, sweep: str | None = None, run_id: str | None = None, force: bool = False
) -> Promotion:
    """Register the best finished, evaluated trial (of `sweep`, or `run_id`) and move the champion alias if it wins.

    The sweeper calls this at the end of a sweep with the sweep's study name.
    """
    from sweeps import tracking

    uri = tracking.resolve_uri(cfg.tracking)
    errors = registry.problems(cfg.registry, uri)
    if errors:
        raise ConfigError(*errors)
    errors = tracking.problems(cfg.tracking)
    if errors:
        raise ConfigError(*errors)
    mlflow_client = registry.client(cfg)
    experiment = mlflow_client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is None:
        raise ConfigError(
            f"tracking.experiment={cfg.tracking.experiment}: no such experiment at {uri}; train first "
            "(python -m sweeps train ...) or point tracking.uri / tracking.experiment at your runs"
        )
    best, objective, direction, scope = _pick(mlflow_client, experiment.experiment_id, sweep, run_id, cfg)
    return registry.register(mlflow_client, cfg.registry, best, objective, direction, scope, force)


def _pick(
    mlflow_client: MlflowClient, experiment_id: str, sweep: str | None, run_id: str | None, cfg: DictConfig
) -> tuple[Run, str, str, str]:
    """The run to register, its objective and direction, and a phrase naming where it was chosen from."""
    if run_id:
        run = _get_run(mlflow_client, run_id)
        sweep_tags = _parent_tags(mlflow_client, run)
        objective = sweep_tags.get("sweeps.objective") or run.data.params.get("objective") or "accuracy"
        direction = _direction(objective, sweep_tags.get("sweeps.direction") or sweep_tags.get("sweeps.directions"))
        reason = _ineligible(run, objective)
        if reason:
            raise ConfigError(f"--run {run_id}: {reason}; only a finished, evaluated run is promoted")
        return run, objective, direction, f"run {run_id}"
    parent = None
    if sweep is None:
        parent = _latest(mlflow_client, experiment_id, "tags.`sweeps.kind` = 'sweep'")
        if parent is None:
            trial = _latest(mlflow_client, experiment_id, "tags.`sweeps.study` LIKE '%'")
            sweep = trial.data.tags["sweeps.study"] if trial else None
        else:
            sweep = parent.data.tags.get("sweeps.study")
    elif sweep:
        parent = _latest(
            mlflow_client, experiment_id, f"tags.`sweeps.kind` = 'sweep' and {_tag('sweeps.study', sweep)}"
        )
    if sweep:
        runs = _runs(mlflow_client, experiment_id, _tag("sweeps.study", sweep))
        runs = [r for r in runs if r.data.tags.get("sweeps.kind") not in NOT_TRIALS]
        if not runs:
            known = sorted(
                {
                    r.data.tags["sweeps.study"]
                    for r in _runs(mlflow_client, experiment_id, "tags.`sweeps.study` LIKE '%'")
                }
            )
            raise ConfigError(
                f"--sweep {sweep}: no trials of that sweep in experiment '{cfg.tracking.experiment}'; "
                + (
                    f"choose one of {', '.join(known)}"
                    if known
                    else "run a sweep first (python -m sweeps train -m ...)"
                )
            )
        scope = f"sweep {sweep}"
    else:
        runs = [r for r in _runs(mlflow_client, experiment_id, "") if r.data.tags.get("sweeps.kind") not in NOT_TRIALS]
        scope = f"experiment {cfg.tracking.experiment} (no sweep found)"
    tags = parent.data.tags if parent else {}
    directions = tags.get("sweeps.direction") or tags.get("sweeps.directions")
    if directions and "," in directions:
        raise ConfigError(
            f"--sweep {sweep}: a multi-objective sweep ({directions}) has no single best trial; "
            "promote one of its Pareto trials with --run RUN_ID (python -m sweeps compare lists them)"
        )
    objective = tags.get("sweeps.objective") or _common_objective(runs)
    direction = _direction(objective, directions)
    eligible = [r for r in runs if not _ineligible(r, objective)]
    if not eligible:
        states = Counter(r.info.status for r in runs)
        summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
        raise ConfigError(
            f"{'--sweep ' + sweep if sweep else 'promote'}: no finished run with metric '{objective}' and a logged "
            f"model in {scope} ({summary or 'no runs'}); train one with tracking.log_model=true "
            "(python -m sweeps train ...) and promote again"
        )
    sign = 1 if direction == "maximize" else -1
    best = max(eligible, key=lambda r: (sign * r.data.metrics[objective], -r.info.start_time))
    return best, objective, direction, scope


def _ineligible(run: Run, objective: str) -> str | None:
    """Why a run cannot be promoted (None when it can)."""
    if run.info.status != "FINISHED":
        return f"the run is {run.info.status.lower()}"
    value = run.data.metrics.get(objective)
    if value is None or not math.isfinite(value):
        return f"the run has no eval metric '{objective}' (it was never evaluated)"
    if not run.data.tags.get("model_uri"):
        return "the run logged no model (trained with tracking.log_model=false)"
    return None


def _parent_tags(mlflow_client: MlflowClient, run: Run) -> dict[str, str]:
    """The tags of the sweep a trial belongs to (empty for a run outside a sweep)."""
    from mlflow.exceptions import MlflowException

    parent = run.data.tags.get("mlflow.parentRunId")
    if not parent:
        return {}
    try:
        return mlflow_client.get_run(parent).data.tags
    except MlflowException:
        return {}


def _direction(objective: str, given: str | None) -> str:
    if given in ("maximize", "minimize"):
        return given
    return "minimize" if objective == "eval_loss" else "maximize"


def _common_objective(runs: list[Run]) -> str:
    counts = Counter(r.data.params["objective"] for r in runs if r.data.params.get("objective"))
    return counts.most_common(1)[0][0] if counts else "accuracy"


def _get_run(mlflow_client: MlflowClient, run_id: str) -> Run:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_run(run_id)
    except MlflowException as exc:
        raise ConfigError(
            f"--run {run_id}: no such run in the tracking store; copy a run id from the MLflow UI"
        ) from exc


def _runs(mlflow_client: MlflowClient, experiment_id: str, query: str) -> list[Run]:
    runs, token = [], None
    while True:
        page = mlflow_client.search_runs([experiment_id], query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _latest(mlflow_client: MlflowClient, experiment_id: str, query: str) -> Run | None:
    runs = mlflow_client.search_runs([experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def _tag(key: str, value: str) -> str:
    return f"tags.`{key}` = '{registry.quote(value)}'"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweeps promote",
        description="Register the best finished trial in the MLflow model registry; move the champion alias if it "
        "beats the champion on the same eval set.",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sweep", metavar="STUDY", help="the sweep (Optuna study name) to take the best trial of")
    which.add_argument("--run", metavar="RUN_ID", help="promote this MLflow run")
    parser.add_argument("--force", action="store_true", help="move the champion alias even without a win")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. tracking.uri=... registry.model_name=...")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = compose(args.overrides)
        promotion = promote_best(cfg, sweep=args.sweep, run_id=args.run, force=args.force)
    except ConfigError as error:
        report(error)
        return EXIT_BAD_INPUT
    print(promotion.message)
    return 0
