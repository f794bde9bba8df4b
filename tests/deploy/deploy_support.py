"""What the promote and deploy tests share: a small sweep trained once per session on the real MLflow server.

The sweep is what the sweeper leaves behind: a parent run tagged as a sweep (objective eval_loss, minimize) and
trials as its children, two trained for real (tiny scratch models on the shared IMDB sample, with their
mlflow.transformers models), one that failed with the best score, one finished but never evaluated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from support import OFFLINE_IMDB, SHARED, cli_env, free_port, run_cli, wait_http  # noqa: F401 (shared with the tests here)

EXPERIMENT = "deploy-tests"
STUDY = "imdb-tiny"
TRIAL = [
    *OFFLINE_IMDB,
    "max_steps=5",
    "dataset.train_size=64",
    "dataset.validation_size=32",
    "dataset.test_size=32",
    "objective=eval_loss",
]


@dataclass(frozen=True)
class Project:
    """The trained sweep: where it is tracked, and its runs by role."""

    root: Path
    tracking_uri: str
    parent: str
    better: str
    worse: str
    failed: str
    unevaluated: str

    def overrides(self, model_name: str) -> list[str]:
        return [
            f"tracking.uri={self.tracking_uri}",
            f"tracking.experiment={EXPERIMENT}",
            f"registry.model_name={model_name}",
        ]

    def cli(self, args: list[str], **env: str):
        """`python -m sweeps ARGS` in the project's folder, with its outputs/ and the given environment."""
        return run_cli(args, self.root, timeout=300, SWEEPS_OUTPUTS=str(self.root / "outputs"), **env)


def compose(overrides: list[str]):
    from sweeps.compose import compose

    return compose(overrides)


@cache
def trained_sweep(tracking_uri: str, root: Path) -> Project:
    """Train the sweep's two real trials in this process (once per session) and record the other two."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from sweeps.train import train

    root.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment_id.experiment_id if experiment_id else client.create_experiment(EXPERIMENT)
    tags = {
        "sweeps.kind": "sweep",
        "sweeps.study": STUDY,
        "sweeps.directions": "minimize",
        "sweeps.objective": "eval_loss",
    }
    parent = client.create_run(experiment_id, run_name=STUDY, tags=tags).info.run_id
    saved = {
        k: os.environ.get(k) for k in ("SWEEPS_PARENT_RUN_ID", "SWEEPS_STUDY_NAME", "SWEEPS_OUTPUTS", "SWEEPS_SHARED")
    }
    os.environ.update(
        SWEEPS_PARENT_RUN_ID=parent,
        SWEEPS_STUDY_NAME=STUDY,
        SWEEPS_OUTPUTS=str(root / "outputs"),
        SWEEPS_SHARED=str(SHARED),
    )
    try:
        losses = {}
        for lr in ("1e-3", "1e-5"):
            cfg = compose([*TRIAL, f"lr={lr}", f"tracking.uri={tracking_uri}", f"tracking.experiment={EXPERIMENT}"])
            losses[lr] = train(cfg)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    trials = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    by_loss = sorted(trials, key=lambda r: r.data.metrics["eval_loss"])
    better, worse = by_loss[0], by_loss[-1]
    assert better.data.metrics["eval_loss"] < worse.data.metrics["eval_loss"]

    def record(status: str, metrics: dict[str, float]) -> str:
        keep = ("model_uri", "dataset.validation_fingerprint", "dataset.fingerprint")
        run_tags = {k: better.data.tags[k] for k in keep} | {"mlflow.parentRunId": parent, "sweeps.study": STUDY}
        run = client.create_run(experiment_id, run_name=f"trial {status.lower()}", tags=run_tags)
        client.log_param(run.info.run_id, "objective", "eval_loss")
        if metrics:
            client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 5) for k, v in metrics.items()])
        client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    failed = record("FAILED", {"eval_loss": 1e-6, "accuracy": 1.0})
    unevaluated = record("FINISHED", {})
    client.set_terminated(parent, "FINISHED")
    return Project(root, tracking_uri, parent, better.info.run_id, worse.info.run_id, failed, unevaluated)


def promote_run(project: Project, model_name: str, run_id: str) -> None:
    """Make `run_id` the champion of `model_name`."""
    from sweeps.promote import promote_best

    promote_best(compose(project.overrides(model_name)), run_id=run_id, force=True)
