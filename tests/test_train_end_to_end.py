"""One offline run end to end through the CLI, tracked on a real MLflow server on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import OFFLINE_IMDB, run_cli

# real training runs
pytestmark = pytest.mark.slow

RUN = [
    *OFFLINE_IMDB,
    "max_steps=30",
    "eval_every=15",
    "dataset.train_size=400",
    "dataset.validation_size=200",
    "dataset.test_size=200",
    "lr=1e-3",
]


@pytest.fixture(scope="module")
def finished_run(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):
    cwd = tmp_path_factory.mktemp("project")
    done = run_cli(["train", *RUN, "tracking.experiment=e2e"], cwd, MLFLOW_TRACKING_URI=mlflow_server)
    assert done.returncode == 0, done.stderr[-3000:]
    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("e2e")
    (run,) = client.search_runs([experiment.experiment_id])
    return cwd, done, client, run


def test_run_records_metrics_params_and_tags(finished_run) -> None:
    _, _, client, run = finished_run
    assert run.info.status == "FINISHED"
    for key in ("accuracy", "precision", "recall", "f1", "eval_loss", "loss", "learning_rate"):
        assert key in run.data.metrics, key
    # the test split is scored once at the end, apart from the validation split that every evaluation saw
    for key in ("test_accuracy", "test_precision", "test_recall", "test_f1", "test_loss"):
        assert key in run.data.metrics, key
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [30]
    assert run.data.tags["dataset.validation_fingerprint"] != run.data.tags["dataset.test_fingerprint"]
    assert 0.0 <= run.data.metrics["accuracy"] <= 1.0
    params = run.data.params
    assert params["optimizer.lr"] == "0.001" and params["lr"] == "0.001"
    assert params["model.init"] == "scratch" and params["dataset.train_size"] == "400"
    tags = run.data.tags
    assert len(tags["mlflow.source.git.commit"]) >= 7
    assert tags["version.torch"] and tags["version.transformers"] and tags["seed"] == "42"
    assert len(tags["dataset.fingerprint"]) == 16
    evals = client.get_metric_history(run.info.run_id, "eval_accuracy")
    assert [m.step for m in evals] == [15, 30]


def test_run_records_artifacts_inputs_and_model(finished_run) -> None:
    _, _, client, run = finished_run
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "confusion_matrix.png", "config"} <= names
    config = {a.path for a in client.list_artifacts(run.info.run_id, "config")}
    assert config == {"config/resolved.yaml", "config/overrides.txt"}
    contexts = sorted(
        tag.value for ds in run.inputs.dataset_inputs for tag in ds.tags if tag.key == "mlflow.data.context"
    )
    assert contexts == ["test", "training", "validation"]
    import mlflow

    model = mlflow.pyfunc.load_model(run.data.tags["model_uri"])
    long_review = "An overlong film that never ends, scene after scene after scene. " * 200  # > 2,000 tokens
    predictions = model.predict(["A wonderful, moving film.", "Dull and far too long.", long_review])
    assert len(predictions) == 3 and set(predictions["label"]) <= {"negative", "positive"}
    logged = client.get_logged_model(run.data.tags["model_uri"].removeprefix("models:/"))
    assert {m.key: m.value for m in logged.metrics}["accuracy"] == pytest.approx(run.data.metrics["accuracy"])
    assert not any(key.startswith("eval_eval_") for key in run.data.metrics)


def test_checkpoint_and_summary(finished_run) -> None:
    cwd, done, _, run = finished_run
    (run_dir,) = (cwd / "outputs" / "runs").iterdir()
    checkpoint = run_dir / "checkpoint"
    assert (checkpoint / "config.json").is_file() and (checkpoint / "tokenizer_config.json").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(run.data.metrics["accuracy"])
    assert "accuracy" in done.stdout and str(checkpoint) in done.stdout.replace("\n", "")


def test_default_store_is_sqlite_under_outputs(tmp_path: Path) -> None:
    done = run_cli(["train", *RUN, "max_steps=4", "eval_every=0", "tracking.log_model=false"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "outputs" / "mlflow.db").is_file()
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
    assert run.info.artifact_uri.startswith((tmp_path / "outputs" / "mlartifacts").as_uri())
