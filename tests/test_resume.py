"""A killed run continues from its last checkpoint: checkpoints written atomically and verified, resume=auto /
<run dir> / <MLflow run id>, the same MLflow run continued, the same weights as a run never interrupted, a sweep's
interrupted trials continued, early stopping keeping the best evaluation's model."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from support import OFFLINE_IMDB, cli_env, run_cli

from sweeps import resume
from sweeps.checkpoints import Checkpoints, verify
from sweeps.compose import compose
from sweeps.errors import ConfigError
from sweeps.train import preflight

SMALL = [
    *OFFLINE_IMDB,
    "dataset.train_size=96",
    "dataset.validation_size=32",
    "dataset.test_size=32",
    "log_every=1",
    "tracking.log_model=false",
]
RUN = [*SMALL, "max_steps=60", "eval_every=10", "checkpoint_every=10", "save_checkpoint=false"]
# wall-time bound for a process under test: a safety net against a hang, not a speed test
BOUND = 600


def wait_for(condition, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (status {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def start(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sweeps", "train", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def client(cwd: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}")


def runs(cwd: Path, experiment: str = "sweeps"):
    c = client(cwd)
    return c.search_runs([c.get_experiment_by_name(experiment).experiment_id])


def last_checkpoint(run_dir: Path):
    loaded = Checkpoints(run_dir).latest()
    assert loaded is not None
    return loaded


def run_dir_of(cwd: Path) -> Path:
    (found,) = [p for p in (cwd / "outputs" / "runs").iterdir() if (p / "checkpoints").is_dir()]
    return found


# ---------------------------------------------------------------- checkpoints, in process
def _save(box: Checkpoints, step: int, meta: dict | None = None) -> Path:
    model = {"w": torch.full((64, 64), float(step))}
    return box.save(step, model, {"step": step, "batches": step}, meta or {})


def test_last_k_kept_and_a_truncated_one_falls_back(tmp_path: Path) -> None:
    box = Checkpoints(tmp_path, keep=2)
    for step in (10, 20, 30):
        _save(box, step)
    assert [p.name for p, _ in box.manifests()] == ["step-00000030", "step-00000020"]
    newest = box.root / "step-00000030" / "model.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # a disk write cut short
    assert "model.pt" in verify(newest.parent)
    loaded = box.latest()
    assert loaded is not None and loaded.step == 20 and float(loaded.model["w"][0, 0]) == 20.0


def test_a_write_killed_midway_leaves_no_checkpoint(tmp_path: Path) -> None:
    box = Checkpoints(tmp_path)
    _save(box, 10)
    half = box.root / ".tmp-step-00000020-123"  # what a kill between the files and the rename leaves
    half.mkdir()
    (half / "model.pt").write_bytes(b"partial")
    assert box.latest().step == 10
    _save(box, 30)
    assert not half.exists() and box.latest().step == 30


def _checkpointed(tmp_path: Path, overrides: list[str]) -> Path:
    """A run dir with a checkpoint of a run trained with `overrides`."""
    cfg = compose([*SMALL, *overrides])
    run_dir = tmp_path / "run"
    _save(Checkpoints(run_dir), 10, {"config": resume.training_config(cfg), "mlflow_run_id": None})
    return run_dir


def test_resume_with_another_lr_is_refused_naming_it(tmp_path: Path) -> None:
    run_dir = _checkpointed(tmp_path, ["lr=1e-3"])
    cfg = compose([*SMALL, "lr=2e-3", f"resume={run_dir}"])
    preflight(cfg)
    with pytest.raises(ConfigError) as raised:
        resume.find(cfg)
    (message,) = raised.value.errors
    assert "lr=0.001 (now 0.002)" in message and "optimizer.lr" in message and "without resume" in message
    # what does not change the weights may differ: cadence, tracking
    same = compose([*SMALL, "lr=1e-3", "log_every=5", "tracking.experiment=other", f"resume={run_dir}"])
    assert resume.find(same).step == 10


def test_resume_of_an_ended_or_missing_run_is_refused(tmp_path: Path) -> None:
    run_dir = _checkpointed(tmp_path, [])
    Checkpoints(run_dir).mark_finished({"state": "finished"})
    for value, expected in ((run_dir, "has ended"), (tmp_path / "nowhere", "no such run dir")):
        with pytest.raises(ConfigError) as raised:
            resume.find(compose([*SMALL, f"resume={value}"]))
        assert f"resume={value}" in raised.value.errors[0] and expected in raised.value.errors[0]
    with pytest.raises(ConfigError, match="checkpoint_keep=0"):
        preflight(compose([*SMALL, "checkpoint_keep=0"]))
    with pytest.raises(ConfigError, match="early_stopping.patience=2: needs evaluations"):
        preflight(compose([*SMALL, "early_stopping.patience=2", "eval_every=0"]))


def test_cli_refuses_another_lr_with_status_2(tmp_path: Path) -> None:
    run_dir = _checkpointed(tmp_path, ["lr=1e-3"])
    done = run_cli(["train", *SMALL, "lr=2e-3", f"resume={run_dir}"], tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("error:") and "lr=0.001 (now 0.002)" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


# ---------------------------------------------------------------- a single run killed and resumed
@pytest.mark.slow
def test_kill_9_then_resume_auto_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    done = run_cli(["train", *RUN], whole)
    assert done.returncode == 0, done.stderr[-3000:]

    proc = start(killed, *RUN)
    try:
        wait_for(lambda: any((killed / "outputs").glob("runs/*/checkpoints/step-00000010")), "checkpoint 10", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    run_dir = run_dir_of(killed)
    assert not Checkpoints(run_dir).finished()
    (before,) = runs(killed)
    assert before.info.status == "RUNNING"  # the killed process never ended it

    done = run_cli(["train", *RUN, "resume=auto"], killed)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming {run_dir} from step" in done.stdout + done.stderr

    ends = last_checkpoint(run_dir_of(whole)), last_checkpoint(run_dir)
    assert [e.step for e in ends] == [60, 60]
    assert ends[0].model.keys() == ends[1].model.keys()
    assert all(torch.equal(ends[0].model[k], ends[1].model[k]) for k in ends[0].model)
    metrics = [json.loads((run_dir_of(d) / "metrics.json").read_text()) for d in (whole, killed)]
    timing = {"train_seconds", "train_tokens_per_s", "first_step_seconds"}
    assert {k: v for k, v in metrics[0].items() if k not in timing} == {
        k: v for k, v in metrics[1].items() if k not in timing
    }

    (after,) = runs(killed)  # one MLflow run, continued
    assert after.info.run_id == before.info.run_id and after.info.status == "FINISHED"
    assert after.data.tags["sweeps.resumed"] == "1" and int(after.data.tags["sweeps.resumed_from_step"]) >= 10
    c, (reference,) = client(killed), runs(whole)
    for key in ("loss", "learning_rate", "eval_accuracy", "eval_loss"):
        history = c.get_metric_history(after.info.run_id, key)
        steps = [m.step for m in history]
        if key != "eval_loss":  # (eval_loss is also a final metric, logged again at the last step)
            assert steps == sorted(set(steps)), (key, steps)  # every step once, in order
        expected = client(whole).get_metric_history(reference.info.run_id, key)
        assert [(m.step, m.value) for m in history] == [(m.step, m.value) for m in expected], key


# ---------------------------------------------------------------- early stopping
@pytest.mark.slow
def test_early_stopping_keeps_the_best_evaluations_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForSequenceClassification

    from sweeps.loop import evaluate_classifier
    from sweeps.train import _prepare

    # no evaluation can beat the first by more than 1.0 accuracy: patience 2 stops the run at the third
    args = [*SMALL, "max_steps=40", "eval_every=4", "early_stopping.patience=2", "early_stopping.min_delta=1.0"]
    done = run_cli(["train", *args], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs(tmp_path)
    tags = run.data.tags
    assert tags["sweeps.early_stopped"] == "true" and tags["sweeps.best_step"] == "4"
    assert tags["sweeps.stopped_at_step"] == "12"
    c = client(tmp_path)
    assert max(m.step for m in c.get_metric_history(run.info.run_id, "loss")) == 12  # stopped early
    (best_eval,) = [m.value for m in c.get_metric_history(run.info.run_id, "eval_loss") if m.step == 4]
    assert run.data.metrics["eval_loss"] == best_eval  # the final metrics are the best evaluation's

    run_dir = run_dir_of(tmp_path)
    best = Checkpoints(run_dir).best()
    assert best is not None and best.step == 4
    saved = AutoModelForSequenceClassification.from_pretrained(run_dir / "checkpoint")  # the run's model
    state = saved.state_dict()
    assert all(torch.equal(state[k], v) for k, v in best.model.items() if k in state)
    # scored again, the reloaded model gives the best evaluation's loss
    monkeypatch.setenv("SWEEPS_OUTPUTS", str(tmp_path / "outputs"))  # the run's token cache
    _, tok, encodings, _ = _prepare(compose(args), "cpu")
    result = evaluate_classifier(saved, encodings.validation, 32, tok.pad_token_id, "cpu", nullcontext())
    assert result.loss == pytest.approx(best_eval, rel=1e-6)


# ---------------------------------------------------------------- a sweep's driver killed and resumed
SWEEP = [
    "-m",
    "sweep=imdb_tpe",
    "hydra.sweeper.n_trials=4",
    "hydra.sweeper.workers=2",
    "hydra.sweeper.sampler.seed=7",
    "hydra.sweeper.study_name=resume-tiny",
    "hydra.sweeper.pruner.name=none",
    *RUN,
    "max_steps=200",
    "checkpoint_every=5",
]


@pytest.mark.slow
def test_sweep_killed_with_two_trials_running_continues_them(tmp_path: Path) -> None:
    import optuna

    def checkpointed() -> list[Path]:
        dirs = {p.parents[1] for p in (tmp_path / "outputs").glob("sweeps/*/*/checkpoints/step-*")}
        return [d for d in dirs if not Checkpoints(d).finished()]

    driver = start(tmp_path, *SWEEP)
    try:
        wait_for(lambda: len(checkpointed()) >= 2, "two trials with a checkpoint", driver)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.communicate()
    interrupted = {str(d) for d in checkpointed()}
    storage = f"sqlite:///{tmp_path / 'outputs' / 'optuna.db'}"

    done = run_cli(["train", *SWEEP], tmp_path, timeout=BOUND * 2)
    assert done.returncode == 0, done.stderr[-4000:]
    study = optuna.load_study(study_name="resume-tiny", storage=storage)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    stale = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(complete) == 4 and len(stale) == 2 and all(t.user_attrs["stale"] for t in stale)
    reruns = [t for t in complete if "retry_of" in t.user_attrs]
    assert {t.user_attrs["sweeps:resume_from"] for t in reruns} == interrupted
    for t in reruns:  # the same parameters as the trial it replaces
        assert t.params == study.trials[t.user_attrs["retry_of"]].params

    trial_runs = [r for r in runs(tmp_path) if r.data.tags.get("sweeps.kind") != "sweep"]
    assert sorted(int(r.data.tags["sweeps.trial"]) for r in trial_runs) == sorted(t.number for t in complete)
    c = client(tmp_path)
    for r in trial_runs:  # one MLflow run per trial, the continued ones from their checkpoint on
        assert r.info.status == "FINISHED"
        steps = [m.step for m in c.get_metric_history(r.info.run_id, "loss")]
        assert steps == list(range(1, 201))
        if r.data.tags["sweeps.run_dir"] in interrupted:
            assert int(r.data.tags["sweeps.resumed_from_step"]) >= 5 and r.data.tags["sweeps.resumed"] == "1"
        else:
            assert "sweeps.resumed" not in r.data.tags


def test_batch_iterators_resume_from_a_position() -> None:
    import itertools

    import numpy as np

    from sweeps.tokens import Encoded, packed_batches, train_batches

    rng = np.random.default_rng(0)
    enc = Encoded.from_rows([list(range(1, int(n) + 1)) for n in rng.integers(2, 30, 50)], np.zeros(50))
    for make in (
        lambda skip: train_batches(enc, 4, 0, False, seed=3, shard=(1, 2), skip=skip),
        lambda skip: packed_batches(enc, 32, 2, 0, seed=3, skip=skip),
    ):
        whole = list(itertools.islice(make(0), 40))  # several epochs
        for skip in (0, 7, 25):
            tail = list(itertools.islice(make(skip), 40 - skip))
            assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(whole[skip:], tail, strict=True))
