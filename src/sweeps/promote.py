"""The model registry: the best finished trial is registered, and the `champion` alias moves to it only when it
beats the current champion on the same eval set; otherwise it becomes the `challenger`.

python -m sweeps promote                   the best trial of the latest sweep (of all runs when there is no sweep)
python -m sweeps promote --sweep STUDY     the best trial of that sweep
python -m sweeps promote --run RUN_ID      that run
Hydra-style overrides choose the store and the registered model, e.g. tracking.uri=http://... registry.model_name=imdb
"""

from __future__ import annotations

import argparse
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from sweeps.compose import compose
from sweeps.errors import EXIT_BAD_INPUT, ConfigError, report
from sweeps.schema.registry import RegistryConfig

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

# Runs that are not trials: a sweep's parent run, a deployment's run.
NOT_TRIALS = ("sweep", "deploy")
ALIAS = re.compile(r"^[\w-]+$")


@dataclass
class Promotion:
    """What promote_best did, and why."""

    model_name: str
    version: str
    run_id: str
    alias: str
    objective: str
    direction: str
    value: float
    message: str
    previous_champion: str | None = None


def problems(cfg: RegistryConfig, tracking_uri: str) -> list[str]:
    """Checks of the values alone."""
    errors = []
    name = cfg.model_name or ""
    if not name.strip() or "/" in name or ":" in name:
        errors.append(f"registry.model_name={name}: a registered model name without '/' or ':', e.g. sweeps-imdb")
    elif _databricks(tracking_uri) and len(name.split(".")) != 3:
        errors.append(
            f"registry.model_name={name}: tracking on Databricks registers in Unity Catalog, which takes a three-part "
            f"name catalog.schema.model; set e.g. registry.model_name=main.default.{name.split('.')[-1]}"
        )
    aliases = {"champion_alias": cfg.champion_alias, "challenger_alias": cfg.challenger_alias}
    for key, alias in aliases.items():
        if not alias or not ALIAS.match(alias) or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
            errors.append(f"registry.{key}={alias}: letters, digits, '_' or '-', not 'latest' nor v<number>")
    if cfg.champion_alias == cfg.challenger_alias:
        errors.append(f"registry.challenger_alias={cfg.challenger_alias}: must differ from registry.champion_alias")
    return errors


def registry_uri(cfg: RegistryConfig, tracking_uri: str) -> str:
    """Where models are registered: the configured URI, Unity Catalog on Databricks, else the tracking store."""
    if cfg.uri:
        return cfg.uri
    if _databricks(tracking_uri):
        return "databricks-uc" + tracking_uri[len("databricks") :]
    return tracking_uri


def client(cfg: DictConfig) -> MlflowClient:
    """An MLflow client on the run's tracking store and model registry."""
    from mlflow import MlflowClient

    from sweeps import tracking

    uri = tracking.resolve_uri(cfg.tracking)
    return MlflowClient(tracking_uri=uri, registry_uri=registry_uri(cfg.registry, uri))


def champion(mlflow_client: MlflowClient, cfg: RegistryConfig) -> ModelVersion | None:
    """The version the champion alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow_client.get_registered_model(cfg.model_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = model.aliases.get(cfg.champion_alias) if isinstance(model.aliases, dict) else None
    return mlflow_client.get_model_version(cfg.model_name, version) if version else None


def promote_best(
    cfg: DictConfig, sweep: str | None = None, run_id: str | None = None, force: bool = False
) -> Promotion:
    """Register the best finished, evaluated trial (of `sweep`, or `run_id`) and move the champion alias if it wins.

    The sweeper calls this at the end of a sweep with the sweep's study name.
    """
    from sweeps import tracking

    uri = tracking.resolve_uri(cfg.tracking)
    errors = problems(cfg.registry, uri)
    if errors:
        raise ConfigError(*errors)
    errors = tracking.problems(cfg.tracking)
    if errors:
        raise ConfigError(*errors)
    mlflow_client = client(cfg)
    experiment = mlflow_client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is None:
        raise ConfigError(
            f"tracking.experiment={cfg.tracking.experiment}: no such experiment at {uri}; train first "
            "(python -m sweeps train ...) or point tracking.uri / tracking.experiment at your runs"
        )
    best, objective, direction, scope = _pick(mlflow_client, experiment.experiment_id, sweep, run_id, cfg)
    return _register(mlflow_client, cfg.registry, best, objective, direction, scope, force)


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


def _register(
    mlflow_client: MlflowClient,
    cfg: RegistryConfig,
    run: Run,
    objective: str,
    direction: str,
    scope: str,
    force: bool,
) -> Promotion:
    from mlflow.exceptions import MlflowException

    name = cfg.model_name
    try:
        mlflow_client.create_registered_model(
            name, description="Best trials of `sweeps` sweeps; the champion alias is the one deploy targets take."
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    value = run.data.metrics[objective]
    fingerprint = run.data.tags.get("dataset.eval_fingerprint", "")
    version = _version_of(mlflow_client, name, run.info.run_id)
    if version is None:
        model_uri = run.data.tags["model_uri"]
        tags = {
            "objective": objective,
            "direction": direction,
            objective: repr(value),
            "dataset.eval_fingerprint": fingerprint,
            "dataset.fingerprint": run.data.tags.get("dataset.fingerprint", ""),
        }
        if run.data.tags.get("sweeps.study"):
            tags["sweeps.study"] = run.data.tags["sweeps.study"]
        version = mlflow_client.create_model_version(
            name,
            source=model_uri,
            run_id=run.info.run_id,
            tags=tags,
            model_id=model_uri.split("/")[-1] if model_uri.startswith("models:/m-") else None,
            description=f"{objective} {value:.4f} ({direction}) on eval set {fingerprint}, from {scope}",
        )
    number = str(version.version)
    head = f"registered {name} version {number} from run {run.info.run_id} ({scope}): {objective} {value:.4f}"
    current = champion(mlflow_client, cfg)

    def result(alias: str, note: str, previous: str | None) -> Promotion:
        message = f"{head}\n{alias}: version {number}{note}"
        return Promotion(name, number, run.info.run_id, alias, objective, direction, value, message, previous)

    def crown(why: str, previous: str | None) -> Promotion:
        mlflow_client.set_registered_model_alias(name, cfg.champion_alias, number)
        model = mlflow_client.get_registered_model(name)
        if isinstance(model.aliases, dict) and model.aliases.get(cfg.challenger_alias) == number:
            mlflow_client.delete_registered_model_alias(name, cfg.challenger_alias)
        return result(cfg.champion_alias, f" ({why})", previous)

    def second(why: str, previous: str) -> Promotion:
        mlflow_client.set_registered_model_alias(name, cfg.challenger_alias, number)
        return result(cfg.challenger_alias, f"; {why}", previous)

    if current is None:
        return crown("the first champion", None)
    previous = str(current.version)
    if previous == number:
        return result(cfg.champion_alias, " already", previous)
    if force:
        return crown(f"forced over version {previous}", previous)
    try:
        rival = mlflow_client.get_run(current.run_id) if current.run_id else None
    except MlflowException:
        rival = None
    if rival is None:
        return crown(f"the run of champion version {previous} is gone", previous)
    rival_fingerprint = rival.data.tags.get("dataset.eval_fingerprint", "")
    if rival_fingerprint != fingerprint:
        return second(
            f"champion version {previous} was evaluated on another eval set (fingerprint {rival_fingerprint or '?'} "
            f"vs {fingerprint or '?'}), so the two are not comparable; evaluate both on the same data, or move the "
            "champion anyway with --force",
            previous,
        )
    rival_value = rival.data.metrics.get(objective)
    if rival_value is None or not math.isfinite(rival_value):
        return crown(f"champion version {previous} has no {objective}", previous)
    better = value > rival_value if direction == "maximize" else value < rival_value
    versus = f"{objective} {value:.4f} vs {rival_value:.4f} of version {previous} on the same eval set ({direction})"
    if better:
        return crown(f"beats the champion: {versus}", previous)
    return second(f"it does not beat champion version {previous}: {versus}", previous)


def _version_of(mlflow_client: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    versions = mlflow_client.search_model_versions(f"name = '{_quote(name)}' and run_id = '{_quote(run_id)}'")
    return min(versions, key=lambda v: int(v.version)) if versions else None


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
    return f"tags.`{key}` = '{_quote(value)}'"


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def _databricks(uri: str) -> bool:
    return uri == "databricks" or uri.startswith("databricks://")


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
