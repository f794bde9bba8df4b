"""Runs on the fake workspace: the async API, re-attaching, pruning, faults, Ctrl-C and kill -9."""

from __future__ import annotations

import json
import signal
import zipfile
from pathlib import Path

import dbx_tasks
import pytest
from dbx_helpers import TrialApp, make_launcher
from fakes.databricks import FakeWorkspace
from hydra.core.utils import JobStatus
from optuna.trial import TrialState
from sweep_apps import wait_for

# runs executed on the fake workspace
pytestmark = pytest.mark.slow

FAST = ("hydra.sweeper.poll_interval=0.1",)


def test_runs_execute_the_uploaded_wheel_and_reattach(databricks_env: FakeWorkspace, tmp_path: Path) -> None:
    workspace = databricks_env
    first = make_launcher(tmp_path, [], dbx_tasks.steps)
    assert first.slots == 1
    handle = first.submit(["steps=4", "value=2.5"], 0, {"SWEEPS_PROGRESS_FILE": str(tmp_path / "driver1.jsonl")})
    assert handle.run_id is not None and handle.external_id == str(handle.run_id)
    assert handle.run_page_url and f"/run/{handle.run_id}" in handle.run_page_url
    assert handle.external_url == handle.run_page_url
    wait_for(lambda: workspace.run_states()[handle.run_id][0] == "RUNNING", 60, "the run to start")

    # a new driver (the first one stopped without closing) finds the run by its id
    second = make_launcher(tmp_path, [], dbx_tasks.steps)
    attached = second.attach(handle.run_id, 0, {"SWEEPS_PROGRESS_FILE": str(tmp_path / "driver2.jsonl")})
    ret = attached.result()
    assert ret.status == JobStatus.COMPLETED, ret._return_value
    assert ret.return_value["value"] == 2.5 and ret.overrides == ["steps=4", "value=2.5"]
    assert ret.return_value["run_id"] == str(handle.run_id)
    libraries = workspace.root / "clusters" / workspace.runs[handle.run_id].cluster_id / "libraries"
    assert Path(ret.return_value["sweeps"]).is_relative_to(libraries), "the run imported sweeps from elsewhere"
    lines = [json.loads(line) for line in (tmp_path / "driver2.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert Path(ret.working_dir, ".hydra", "config.yaml").is_file()
    assert len(workspace.submits()) == 1

    with pytest.raises(LookupError):
        second.attach(123456789, 1, {})
    first.close()
    second.close()
    assert not workspace.cancels(), "closing a launcher whose runs ended cancels nothing"

    [library] = workspace.submits()[0]["tasks"][0]["libraries"]
    with zipfile.ZipFile(workspace.volume_file(library["whl"])) as wheel:
        names = wheel.namelist()
    assert "sweeps/conf/config.yaml" in names and "sweeps/conf/compute/databricks.yaml" in names
    assert "hydra_plugins/sweeps_databricks_launcher/_remote.py" in names


def test_pruned_trials_are_cancelled_and_throttling_is_retried(trial_app: TrialApp) -> None:
    faults = trial_app.workspace.faults
    faults.http_errors = {
        "/api/2.2/jobs/runs/get": [429, 503, 429],
        "/api/2.2/jobs/runs/submit": [500],  # not retried by the SDK: sent again with the same token
        "/api/2.0/preview/scim/v2/Me": [503],
    }
    faults.submit_created_then_503 = 1  # retried by the SDK: the token must not start a second run
    # trials 1 and 2 (x > 0.6) report a bad curve; trial 2 runs once two trials are complete and is pruned
    result = trial_app.run(
        *FAST,
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.pruner.name=median",
        "bad_above=0.6",
        "steps=4",
        "durations=[1,1,8,1]",
    )
    assert result.returncode == 0, result.stderr
    trials = {t.number: t for t in trial_app.trials()}
    assert trials[2].state == TrialState.PRUNED, {n: t.state for n, t in trials.items()}
    assert {trials[n].state for n in (0, 1, 3)} == {TrialState.COMPLETE}
    assert trials[2].intermediate_values
    run_id = int(trials[2].user_attrs["sweeps:external_id"])
    assert run_id in trial_app.workspace.cancels()
    assert trial_app.workspace.run_states()[run_id] == ("TERMINATED", "CANCELED")
    steps = {r["trial"]: r["step"] for r in trial_app.records("step")}
    assert steps[2] < 4, "the pruned trial ran to its end"
    assert len(trial_app.workspace.runs) == 4, "a retried submit started a second run"
    assert not any(faults.http_errors.values()), "an injected error was never served"


def test_cluster_launch_failure_and_timeout_fail_their_trials_with_the_state_message(trial_app: TrialApp) -> None:
    trial_app.workspace.faults.launch_failures = 1  # the first run's cluster does not come up
    result = trial_app.run(
        *FAST,
        "hydra.sweeper.n_trials=2",
        "durations=[60]",
        "hydra.launcher.timeout=5",
        "hydra.sweeper.max_failure_rate=1.0",
    )
    assert result.returncode == 0, result.stderr
    errors = {t.number: t.user_attrs["error"] for t in trial_app.trials() if t.state == TrialState.FAIL}
    assert set(errors) == {0, 1}, trial_app.states()
    assert "INTERNAL_ERROR" in errors[0] and "CLOUD_PROVIDER_LAUNCH_FAILURE" in errors[0] and "quota" in errors[0]
    assert "TIMEDOUT" in errors[1] and "timed out after 5 seconds" in errors[1]


def test_ctrl_c_cancels_every_active_run(trial_app: TrialApp) -> None:
    workspace = trial_app.workspace
    driver = trial_app.start(*FAST, "hydra.sweeper.n_trials=4", "durations=[60]")
    try:
        wait_for(lambda: len(trial_app.records("start")) >= 2, 120, "two trials to start on the workspace")
        active = [r for r, (life, _) in workspace.run_states().items() if life == "RUNNING"]
        driver.send_signal(signal.SIGINT)
        output, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 130, output
    assert len(active) == 2
    assert set(active) <= set(workspace.cancels())
    assert all(workspace.run_states()[r] == ("TERMINATED", "CANCELED") for r in active)
    assert not [r for r, (life, _) in workspace.run_states().items() if life in ("PENDING", "RUNNING")]
    assert trial_app.states() == {"FAIL": 2, "WAITING": 2}
