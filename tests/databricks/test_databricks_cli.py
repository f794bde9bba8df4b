"""Bad input before anything is submitted, and `python -m sweeps databricks check|cleanup`."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.core import Config
from databricks.sdk.service.compute import ClusterSpec, Library
from databricks.sdk.service.jobs import PythonWheelTask, SubmitTask
from dbx_helpers import DATABRICKS_COMPUTE, TINY_TRAIN, VOLUME, sweeps_cli, user_env
from fakes.databricks import FakeWorkspace


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


BAD_INPUT = [
    pytest.param(
        [], {"DATABRICKS_HOST": None, "DATABRICKS_TOKEN": None}, ["no usable credentials"], id="no-credentials"
    ),
    pytest.param([], {"DATABRICKS_TOKEN": "dapi-not-the-right-token"}, ["refused the credentials"], id="wrong-token"),
    pytest.param([], {"DATABRICKS_HOST": "dead"}, ["does not answer"], id="dead-host"),
    pytest.param(
        [
            "hydra.launcher.upload_dir=/dbfs/tmp/sweeps",
            "hydra.launcher.existing_cluster_id=0101-120000-abcdefgh",
            "tracking.uri=sqlite:///mlflow.db",
            "hydra.launcher.distributed=true",
        ],
        {},
        [
            "hydra.launcher.distributed=true needs worker nodes",
            "hydra.launcher.upload_dir=/dbfs/tmp/sweeps: not a Unity Catalog volume path",
            "hydra.launcher.existing_cluster_id=0101-120000-abcdefgh and hydra.launcher.new_cluster are both set",
            "tracking.uri=sqlite:///mlflow.db: trials on Databricks cannot write to this machine's MLflow store",
        ],
        id="settings",
    ),
]


@pytest.mark.parametrize("overrides, env_changes, messages", BAD_INPUT)
def test_bad_input_exits_2_before_anything_is_submitted(
    workspace: FakeWorkspace,
    outputs: Path,
    tmp_path: Path,
    overrides: list[str],
    env_changes: dict[str, str | None],
    messages: list[str],
) -> None:
    env = user_env(workspace, outputs, tmp_path)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key)
        else:
            env[key] = f"http://127.0.0.1:{_free_port()}" if value == "dead" else value
    started = time.monotonic()
    args = ["train", "-m", *DATABRICKS_COMPUTE, *TINY_TRAIN, "tracking.uri=http://127.0.0.1:9", *overrides]
    result = sweeps_cli(args, tmp_path, env)
    assert result.returncode == 2, result.stdout + result.stderr
    for message in messages:
        assert message in result.stderr, result.stderr
    assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr, result.stderr
    assert time.monotonic() - started < 45, "bad input took too long to report"
    assert workspace.calls("POST", "/api/2.2/jobs/runs/submit") == 0
    assert not [p for m, p in workspace.requests if m == "PUT"], "something was uploaded"
    assert workspace.token not in result.stdout + result.stderr


def test_workspace_settings_are_checked_before_an_optuna_sweep_starts(
    workspace: FakeWorkspace, outputs: Path, tmp_path: Path
) -> None:
    env = user_env(workspace, outputs, tmp_path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = [
        "train",
        "-m",
        *DATABRICKS_COMPUTE,
        *TINY_TRAIN,
        "tracking.uri=http://127.0.0.1:9",
        "hydra/sweeper=sweeps_optuna",
        f"hydra.sweeper.storage={storage}",
        "lr=1e-3,1e-2",
        "hydra.launcher.new_cluster.node_type_id=Standard_Nope",
        "hydra.launcher.new_cluster.spark_version=13.9.x-gpu-ml-scala2.12",
        "hydra.launcher.upload_dir=/Volumes/main/ml/nothing/sweeps",
    ]
    result = sweeps_cli(args, tmp_path, env)
    assert result.returncode == 2, result.stderr
    for message in (
        "hydra.launcher.new_cluster.node_type_id=Standard_Nope: not a node type of this workspace",
        "hydra.launcher.new_cluster.spark_version=13.9.x-gpu-ml-scala2.12: not a runtime of this workspace",
        "the volume /Volumes/main/ml/nothing does not exist",
    ):
        assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    import optuna

    assert not optuna.storages.RDBStorage(storage).get_all_studies(), "a study was created"
    assert workspace.calls("POST", "/api/2.2/jobs/runs/submit") == 0


def test_check_reports_the_workspace_and_exits_2_on_a_bad_setting(
    workspace: FakeWorkspace, outputs: Path, tmp_path: Path
) -> None:
    env = user_env(workspace, outputs, tmp_path)
    settings = [o for o in DATABRICKS_COMPUTE if o != "compute=databricks"]
    ok = sweeps_cli(["databricks", "check", *settings], tmp_path, env)
    assert ok.returncode == 0, ok.stderr
    assert "sweeper@example.com" in ok.stdout and "ok:" in ok.stdout
    bad = sweeps_cli(
        ["databricks", "check", *settings, "hydra.launcher.new_cluster.node_type_id=Standard_Nope"], tmp_path, env
    )
    assert bad.returncode == 2
    assert "hydra.launcher.new_cluster.node_type_id=Standard_Nope" in bad.stderr
    assert workspace.calls("POST", "/api/2.2/jobs/runs/submit") == 0
    assert workspace.token not in ok.stdout + ok.stderr + bad.stdout + bad.stderr


def test_cleanup_cancels_a_sweeps_active_runs_and_terminates_their_clusters(
    workspace: FakeWorkspace, outputs: Path, tmp_path: Path
) -> None:
    workspace.faults.start_delay = 300  # the clusters never come up: the runs stay PENDING
    client = WorkspaceClient(config=Config(host=workspace.url, token=workspace.token))
    cluster = ClusterSpec.from_dict(
        {"spark_version": "15.4.x-cpu-ml-scala2.12", "node_type_id": "Standard_D4ds_v5", "num_workers": 0}
    )

    def submit(name: str) -> int:
        task = SubmitTask(
            task_key="trial",
            python_wheel_task=PythonWheelTask(package_name="sweeps", entry_point="sweeps", parameters=["--help"]),
            libraries=[Library(whl=f"{VOLUME}/wheels/sweeps-0.1.0-py3-none-any.whl")],
            new_cluster=cluster,
        )
        return client.jobs.submit(run_name=name, tasks=[task]).response.run_id

    alpha = [submit("sweeps/alpha/0"), submit("sweeps/alpha/1")]
    beta = submit("sweeps/beta/0")
    result = sweeps_cli(["databricks", "cleanup", "--sweep", "alpha"], tmp_path, user_env(workspace, outputs, tmp_path))
    assert result.returncode == 0, result.stderr
    assert "2 run(s) cancelled" in result.stdout
    states = workspace.run_states()
    assert [states[r] for r in alpha] == [("TERMINATED", "CANCELED")] * 2
    assert states[beta] == ("PENDING", None)
    assert all(workspace.clusters[workspace.runs[r].cluster_id]["state"] == "TERMINATED" for r in alpha)
    assert set(workspace.cancels()) == set(alpha)
