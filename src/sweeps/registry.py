"""The MLflow model registry: where models are registered, its champion alias, and registering a chosen run there.

A registered run becomes the `champion` only when it beats the current champion on the same eval set; otherwise it
becomes the `challenger`. Which run is chosen is sweeps.promote's part.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from sweeps.schema.registry import RegistryConfig

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

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
    import mlflow
    from mlflow import MlflowClient

    from sweeps import tracking

    uri = tracking.resolve_uri(cfg.tracking)
    registry = registry_uri(cfg.registry, uri)
    # MLflow's registry looks a version's logged model up through the process-wide store: point it at ours
    # too, or `tracking.uri=...` would find no model (and leave a stray ./mlflow.db behind).
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry)
    return MlflowClient(tracking_uri=uri, registry_uri=registry)


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


def register(
    mlflow_client: MlflowClient,
    cfg: RegistryConfig,
    run: Run,
    objective: str,
    direction: str,
    scope: str,
    force: bool,
) -> Promotion:
    """Register `run` (a rerun finds its version again) and move the champion alias to it if it wins, else the
    challenger alias."""
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
    fingerprint = run.data.tags.get("dataset.validation_fingerprint", "")
    version = _version_of(mlflow_client, name, run.info.run_id)
    if version is None:
        model_uri = run.data.tags["model_uri"]
        tags = {
            "objective": objective,
            "direction": direction,
            objective: repr(value),
            "dataset.validation_fingerprint": fingerprint,
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
    rival_fingerprint = rival.data.tags.get("dataset.validation_fingerprint", "")
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
    versions = mlflow_client.search_model_versions(f"name = '{quote(name)}' and run_id = '{quote(run_id)}'")
    return min(versions, key=lambda v: int(v.version)) if versions else None


def quote(value: str) -> str:
    """`value` inside single quotes of an MLflow search filter."""
    return value.replace("'", "\\'")


def _databricks(uri: str) -> bool:
    return uri == "databricks" or uri.startswith("databricks://")
