"""Training really learns: a small scratch model beats the majority class on the 2000-review IMDB test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import OFFLINE_IMDB, SHARED

from sweeps.compose import compose as compose_config


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEPS_SHARED", str(SHARED))
    for key in ("MLFLOW_TRACKING_URI", "SWEEPS_PROGRESS_FILE", "SWEEPS_PARENT_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


@pytest.mark.slow
def test_offline_experiment_beats_majority_class(project: Path) -> None:
    from sweeps.train import train

    cfg = compose_config(["experiment=offline", "tracking.log_model=false"])
    assert cfg.dataset.test_size is None  # the whole 2000-review test split
    accuracy = train(cfg)
    import json

    (metrics_file,) = (project / "outputs" / "runs").glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    print(f"IMDB test accuracy {accuracy:.4f} vs majority baseline {metrics['majority_baseline']:.4f}")
    assert metrics["majority_baseline"] == pytest.approx(0.5)
    assert accuracy >= metrics["majority_baseline"] + 0.15


@pytest.mark.slow
def test_causal_lm_scores_label_words(project: Path) -> None:
    from sweeps.train import train

    overrides = [*OFFLINE_IMDB, "model.task=causal_lm", "max_steps=20", "lr=1e-3", "dataset.train_size=200"]
    overrides += [
        "dataset.validation_size=64",
        "dataset.test_size=64",
        "eval_every=10",
        "tracking.log_model=false",
        "objective=f1",
    ]
    f1 = train(compose_config(overrides))
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'outputs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
    for key in ("accuracy", "precision", "recall", "f1", "eval_loss", "perplexity"):
        assert key in run.data.metrics
    assert run.data.metrics["f1"] == pytest.approx(f1)
    assert run.data.metrics["perplexity"] == pytest.approx(np.exp(run.data.metrics["eval_loss"]), rel=1e-6)
    assert 1.0 < run.data.metrics["perplexity"] < 60000


def test_tokenised_data_is_cached_by_fingerprint(project: Path) -> None:
    from sweeps import dataset, tokenizer
    from sweeps.tokens import encode

    cfg = compose_config(
        [*OFFLINE_IMDB, "dataset.train_size=300", "dataset.validation_size=100", "dataset.test_size=100"]
    )
    splits = dataset.load_splits(cfg.dataset)
    tok = tokenizer.load_tokenizer(cfg.tokenizer)
    args = (splits, tok, tokenizer.identity(tok), 128, "classification", cfg.dataset, project / "cache")
    first, second = encode(*args), encode(*args)
    assert not first.cached and second.cached and first.key == second.key
    assert np.array_equal(first.train.ids, second.train.ids) and np.array_equal(first.test.labels, second.test.labels)
    assert first.train.lengths.max() <= 128
    other = encode(splits, tok, tokenizer.identity(tok), 64, "classification", cfg.dataset, project / "cache")
    assert other.key != first.key and not other.cached
