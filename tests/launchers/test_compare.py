"""`python -m sweeps compare` on a study store written with Optuna directly."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeps.compare import main


@pytest.fixture
def store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    older = optuna.create_study(study_name="older", storage=url)
    older.tell(older.ask({"lr": optuna.distributions.FloatDistribution(0, 1)}), 1.0)

    study = optuna.create_study(study_name="latest", storage=url, direction="maximize")
    space = {"lr": optuna.distributions.FloatDistribution(0, 1)}
    for lr, value in [(0.1, 0.5), (0.2, 0.9), (0.3, 0.7)]:
        study.enqueue_trial({"lr": lr})
        study.tell(study.ask(space), value)
    pruned = study.ask(space)
    pruned.report(0.1, 1)
    pruned.report(0.2, 2)
    pruned.set_user_attr("last_step", 2)
    study.tell(pruned, state=TrialState.PRUNED)
    failed = study.ask(space)
    failed.set_user_attr("error", "RuntimeError: CUDA out of memory")
    study.tell(failed, state=TrialState.FAIL)
    return url


def test_json_lists_the_latest_sweep_best_first(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--storage", store, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["study"] == "latest" and out["directions"] == ["maximize"]
    rows = out["trials"]
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED", "FAIL"]
    assert [r["values"][0] for r in rows[:3]] == [0.9, 0.7, 0.5]
    assert rows[3]["steps"] == 2
    assert rows[4]["note"] == "RuntimeError: CUDA out of memory"
    assert rows[0]["params"] == {"lr": 0.2}


def test_table_and_csv(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--storage", store, "--sweep", "older"]) == 0
    assert "sweep older (minimize)" in capsys.readouterr().out
    assert main(["--storage", store, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "number,state,value,lr,steps,duration_s,run_id,note"
    assert lines[1].startswith("1,COMPLETE,0.9,0.2,")


def test_unknown_sweep_names_the_option_and_the_choices(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--storage", store, "--sweep", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: --sweep nope:") and "available: latest, older" in err[0]


def test_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--storage", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "no such database" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_the_table_reads_at_80_columns_with_each_trials_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="wide", storage=url, direction="maximize")
    names = ["lr", "batch_size", "optimizer.weight_decay", "optimizer.warmup_ratio", "epochs", "adapter.r"]
    space = {name: optuna.distributions.FloatDistribution(0, 1) for name in names}
    for i in range(3):
        trial = study.ask(space)
        trial.set_user_attr("mlflow_run_id", f"{i}abcdef0123456789")
        trial.set_user_attr("error", "ValueError: " + "a long explanation of what went wrong " * 4)
        study.tell(trial, 0.5 + i / 10)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["--storage", url]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert "2abcdef0" in out and "warmup_ratio" in out.replace("\n", "").replace(" ", "").replace("│", "")
