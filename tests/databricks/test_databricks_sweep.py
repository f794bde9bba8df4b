"""Sweeps end to end on the fake workspace: `sweeps train` trials on job clusters, kill -9 and resume."""

from __future__ import annotations

import signal
from pathlib import Path

import optuna
import pytest
from dbx_helpers import DATABRICKS_COMPUTE, TINY_TRAIN, TrialApp, sweeps_cli, user_env
from fakes.databricks import FakeWorkspace
from optuna.trial import TrialState
from sweep_apps import wait_for

# sweeps of real trials on the fake workspace, TorchDistributor, kill/resume
pytestmark = pytest.mark.slow


def test_sweeps_train_trials_on_job_clusters(
    workspace: FakeWorkspace, outputs: Path, tmp_path: Path, mlflow_server: str
) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = [
        "train",
        "-m",
        *DATABRICKS_COMPUTE,
        *TINY_TRAIN,
        "dataset.train_size=64",
        "dataset.validation_size=32",
        "dataset.test_size=32",
        "batch_size=8",
        "max_steps=8",
        "eval_every=2",
        "objective=eval_loss",
        "save_checkpoint=false",
        f"tracking.uri={mlflow_server}",
        "tracking.experiment=databricks-e2e",
        "tracking.log_model=false",
        "hydra/sweeper=sweeps_optuna",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=databricks-e2e",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.workers=1",
        "hydra.sweeper.direction=minimize",
        "hydra.sweeper.pruner.name=median",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.poll_interval=0.2",
        "hydra.sweeper.sampler.seed=0",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        "lr=1e-3,3e-3",
    ]
    result = sweeps_cli(args, tmp_path, user_env(workspace, outputs, tmp_path / "home"), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials = optuna.load_study(study_name="databricks-e2e", storage=storage).get_trials()
    assert len(trials) == 1
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert all(t.intermediate_values for t in trials), "eval metrics of a trial never reached the driver"
    runs = workspace.runs
    assert len(runs) == 1 and len(workspace.submits()) == 1
    for t in trials:
        run_id = int(t.user_attrs["sweeps:external_id"])
        life, result_state = workspace.run_states()[run_id]
        if t.state == TrialState.PRUNED:
            assert run_id in workspace.cancels()
        else:
            assert (life, result_state) == ("TERMINATED", "SUCCESS")

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("databricks-e2e")
    trial_runs = [r for r in client.search_runs([experiment.experiment_id]) if "sweeps.trial" in r.data.tags]
    assert len(trial_runs) == 1
    parent = {r.data.tags.get("mlflow.parentRunId") for r in trial_runs}
    assert len(parent) == 1 and None not in parent
    for run in trial_runs:
        run_id = int(run.data.tags["databricks.run_id"])
        assert run_id in runs
        assert run.data.tags["databricks.run_page_url"].endswith(f"/run/{run_id}")
        assert "eval_loss" in run.data.metrics

    # the token reached neither the console, nor a file here or on the workspace, nor MLflow
    token = workspace.token
    assert token not in result.stdout + result.stderr
    for folder in (tmp_path, workspace.root):
        for path in folder.rglob("*"):
            if path.is_file():
                assert token.encode() not in path.read_bytes(), path
    for run in client.search_runs([experiment.experiment_id]):
        assert token not in repr(run.data.params) + repr(run.data.tags)
    for run in trial_runs:
        resolved = client.download_artifacts(run.info.run_id, "config/resolved.yaml", str(tmp_path))
        assert token not in Path(resolved).read_text()


def test_a_distributed_trial_trains_on_every_worker_through_torch_distributor(
    workspace: FakeWorkspace, outputs: Path, tmp_path: Path, mlflow_server: str
) -> None:
    """hydra.launcher.distributed=true on a two-worker cluster: TorchDistributor (a real local Spark, one task slot per
    worker) starts one rank per worker; rank 0 reports progress and tracks the one MLflow run."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    two_workers = "{spark_version:'15.4.x-cpu-ml-scala2.12',node_type_id:Standard_D4ds_v5,num_workers:2}"
    args = [
        "train",
        "-m",
        *DATABRICKS_COMPUTE,
        f"hydra.launcher.new_cluster={two_workers}",
        "hydra.launcher.distributed=true",
        *TINY_TRAIN,
        "dataset.train_size=64",
        "dataset.validation_size=32",
        "dataset.test_size=32",
        "batch_size=4",
        "max_steps=6",
        "eval_every=3",
        "objective=accuracy",
        "save_checkpoint=false",
        f"tracking.uri={mlflow_server}",
        "tracking.experiment=databricks-ddp",
        "tracking.log_model=false",
        "hydra/sweeper=sweeps_optuna",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=databricks-ddp",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.workers=1",
        "hydra.sweeper.poll_interval=0.2",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        "lr=1e-3,3e-3",
    ]
    result = sweeps_cli(args, tmp_path, user_env(workspace, outputs, tmp_path / "home"), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (trial,) = optuna.load_study(study_name="databricks-ddp", storage=storage).get_trials()
    (run,) = workspace.runs.values()
    log = run.log_path.read_text()
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("error", "") + log[-4000:]
    assert sorted(trial.intermediate_values) == [3, 6], "rank 0's eval metrics did not reach the driver"
    assert run.task["new_cluster"]["num_workers"] == 2
    assert "Started distributed training with 2 executor processes" in log, log[-3000:]

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("databricks-ddp")
    (tracked,) = [r for r in client.search_runs([experiment.experiment_id]) if "sweeps.trial" in r.data.tags]
    assert tracked.info.status == "FINISHED"
    assert tracked.data.tags["processes"] == "2"
    assert tracked.data.metrics["accuracy"] == trial.value


def test_kill_9_then_resume_attaches_to_the_runs_still_going_and_prunes_them(trial_app: TrialApp) -> None:
    """4 trials with a median pruner; the driver is killed while trials 2 and 3 run. The resumed sweep watches
    their runs again: trial 2 (a bad curve, as trial 1's) is pruned and cancelled, trial 3 completes."""
    workspace = trial_app.workspace
    # x > 0.6 (trials 1 and 2 with this seed) reports a bad curve; trials 2 and 3 are long, and the pruner
    # (n_warmup_steps=1) can act on trial 2 only from its second report, 8 s in: well after the kill
    args = (
        "hydra.sweeper.poll_interval=0.1",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.pruner.name=median",
        "bad_above=0.6",
        "steps=4",
        "durations=[1.0,1.0,16,16]",
    )
    driver = trial_app.start(*args)
    try:
        wait_for(
            lambda: len(trial_app.records("start")) >= 4 and trial_app.states().get("COMPLETE", 0) >= 2,
            180,
            "two trials to finish and two more to start",
        )
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    running = {t.number for t in trial_app.trials() if t.state == TrialState.RUNNING}
    assert running == {2, 3}
    going = [r for r, (life, _) in workspace.run_states().items() if life in ("PENDING", "RUNNING")]
    assert len(going) == 2, "the runs of a killed driver go on"

    result = trial_app.run(*args)
    assert result.returncode == 0, result.stderr
    trials = {t.number: t for t in trial_app.trials()}
    assert {n: t.state for n, t in trials.items()} == {
        0: TrialState.COMPLETE,
        1: TrialState.COMPLETE,
        2: TrialState.PRUNED,
        3: TrialState.COMPLETE,
    }
    assert len(workspace.submits()) == 4, "a run still going was submitted again"
    pruned_run = int(trials[2].user_attrs["sweeps:external_id"])
    assert workspace.cancels() == [pruned_run]
    assert workspace.run_states()[pruned_run] == ("TERMINATED", "CANCELED")
    ends = [r["trial"] for r in trial_app.records("end")]
    assert sorted(ends) == [0, 1, 3], "a trial ran twice, or the pruned one ran to its end"
