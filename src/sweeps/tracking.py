"""MLflow tracking: where runs go, and what each run records (params, metrics, artifacts, model, tags)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import urllib.request
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from sweeps.schema.tracking import TrackingConfig
from sweeps.secrets import mask, mask_text

if TYPE_CHECKING:
    import mlflow

PACKAGES = ("torch", "transformers", "datasets", "accelerate", "mlflow", "optuna", "hydra-core", "sweeps")


def outputs_dir() -> Path:
    """The project's outputs/ folder (run dirs, stores, caches), under the directory the command ran in."""
    return Path(os.environ.get("SWEEPS_OUTPUTS", Path.cwd() / "outputs")).resolve()


def resolve_uri(cfg: TrackingConfig) -> str:
    """The tracking URI a run uses."""
    if cfg.uri:
        return cfg.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{outputs_dir() / 'mlflow.db'}"


def artifact_root(uri: str) -> str | None:
    """Artifact location for new experiments in a local store; servers choose their own."""
    if uri.startswith("sqlite:") or uri.startswith("file:"):
        return (outputs_dir() / "mlartifacts").as_uri()
    return None


def problems(cfg: TrackingConfig) -> list[str]:
    """A tracking server that does not answer is reported before anything runs."""
    uri = resolve_uri(cfg)
    if not uri.startswith(("http://", "https://")):
        return []
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:
            response.read()
    except OSError as exc:
        return [f"tracking.uri={uri}: the MLflow server does not answer ({exc}); start it or fix tracking.uri"]
    return []


def use(cfg: TrackingConfig) -> str:
    """Point MLflow at the store and experiment; returns the experiment id."""
    import mlflow

    uri = resolve_uri(cfg)
    if uri.startswith("sqlite:"):
        outputs_dir().mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is not None:
        mlflow.set_experiment(experiment_id=experiment.experiment_id)
        return experiment.experiment_id
    try:
        experiment_id = mlflow.create_experiment(cfg.experiment, artifact_location=artifact_root(uri))
    except mlflow.exceptions.MlflowException:  # created meanwhile by a sibling trial
        experiment_id = mlflow.get_experiment_by_name(cfg.experiment).experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as dotted keys, secrets masked."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = json.dumps(node) if isinstance(node, list) else node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return mask(flat)


def log_config(cfg: DictConfig, overrides: list[str]) -> None:
    """Params (flattened config) and the resolved config and overrides as artifacts."""
    import mlflow

    flat = flatten(cfg)
    mlflow.log_params({k: str(v)[:6000] for k, v in flat.items()})
    resolved = OmegaConf.to_yaml(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    mlflow.log_text(mask_text(resolved), "config/resolved.yaml")
    mlflow.log_text(mask_text("\n".join(overrides) + "\n"), "config/overrides.txt")


def provenance_tags() -> dict[str, str]:
    """Git commit of the code and versions of the packages that shape a run."""
    from importlib.metadata import PackageNotFoundError, version

    tags = {"mlflow.source.name": "python -m sweeps train", "mlflow.source.type": "LOCAL"}
    for package in PACKAGES:
        try:
            tags[f"version.{package}"] = version(package)
        except PackageNotFoundError:
            pass
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        tags["mlflow.source.git.commit"] = commit
        tags["git.dirty"] = str(bool(dirty)).lower()
    except (OSError, subprocess.SubprocessError):
        tags["mlflow.source.git.commit"] = "unknown"
    return tags


def log_dataset(frame, source: str, name: str, context: str, fingerprint: str) -> None:
    """The split as an MLflow dataset input (schema, digest, source)."""
    import mlflow

    with warnings.catch_warnings():  # MLflow's hints about source types and integer columns
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, source=source, name=name, targets="label", digest=fingerprint)
        mlflow.log_input(dataset, context=context)


def log_model(net, tokenizer, task: str, max_length: int) -> tuple[str, str]:
    """Log the model as an mlflow.transformers pipeline, so MLflow can load and serve it: inputs are truncated to
    the `max_length` tokens it was trained on (a long review is answered, not an IndexError). Returns its URI and
    LoggedModel id."""
    import mlflow
    import transformers

    pipeline_task = "text-classification" if task == "classification" else "text-generation"
    tokenizer.model_max_length = max_length  # what `truncation` cuts inputs to, in the saved tokenizer too
    pipe = transformers.pipeline(pipeline_task, model=net, tokenizer=tokenizer)
    inference: dict[str, Any] = {"truncation": True}
    if task == "causal_lm":  # a long prompt keeps its end (the question after the text)
        tokenizer.truncation_side = "left"
        inference["max_new_tokens"] = 4
    requirements = [f"{p}=={v}" for p, v in _versions(("torch", "transformers", "accelerate")).items()]
    quiet = logging.getLogger("mlflow.transformers")  # model-card and license lookups on the Hub
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        info = mlflow.transformers.log_model(
            transformers_model=pipe,
            name="model",
            task=pipeline_task,
            pip_requirements=requirements,
            model_config=inference,
        )
    finally:
        quiet.setLevel(level)
    return info.model_uri, info.model_id


def _versions(packages: tuple[str, ...]) -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p).split("+")[0] for p in packages}


def run_url(uri: str, run: mlflow.entities.Run) -> str:
    """Where the run shows in the MLflow UI (`python -m sweeps ui` serves local stores on port 5000)."""
    base = uri if uri.startswith("http") else "http://127.0.0.1:5000"
    return f"{base.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
