"""Bad input before anything is submitted (the option checks in this process, what needs a workspace through the
command line), and `python -m sweeps databricks check|cleanup`."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.core import Config
from databricks.sdk.service.compute import ClusterSpec, Library
from databricks.sdk.service.jobs import PythonWheelTask, SubmitTask
from dbx_helpers import DATABRICKS_COMPUTE, TINY_TRAIN, VOLUME, sweeps_cli, user_env
from fakes.databricks import FakeWorkspace
from hydra.utils import instantiate
from hydra_plugins.sweeps_databricks_launcher import _checks
from hydra_plugins.sweeps_databricks_launcher.databricks_launcher import DatabricksLauncher

from sweeps.compose import compose
from sweeps.errors import ConfigError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launcher(*overrides: str) -> DatabricksLauncher:
    """The launcher `python -m sweeps train -m compute=databricks ...` sets up, before it submits anything."""
    cfg = compose([*DATABRICKS_COMPUTE, *TINY_TRAIN, "tracking.uri=http://127.0.0.1:9", *overrides], with_hydra=True)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    return launcher


def _problems(call) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        call()
    return raised.value.errors


def test_the_cli_settings_pass_the_checks_without_the_network() -> None:
    """The base of the cases below is itself fine."""
    opts, uri = _checks.checked(_launcher())
    assert opts.upload_dir == f"{VOLUME}/cli" and opts.new_cluster["node_type_id"] == "Standard_D4ds_v5"
    assert uri == "http://127.0.0.1:9"


def test_every_bad_setting_is_reported_at_once() -> None:
    launcher = _launcher(
        "hydra.launcher.upload_dir=/dbfs/tmp/sweeps",
        "hydra.launcher.existing_cluster_id=0101-120000-abcdefgh",
        "tracking.uri=sqlite:///mlflow.db",
        "hydra.launcher.distributed=true",
    )
    errors = _problems(lambda: _checks.checked(launcher))
    assert len(errors) == 4, errors
    for message in (
        "hydra.launcher.distributed=true needs worker nodes",
        "hydra.launcher.upload_dir=/dbfs/tmp/sweeps: not a Unity Catalog volume path",
        "hydra.launcher.existing_cluster_id=0101-120000-abcdefgh and hydra.launcher.new_cluster are both set",
        "tracking.uri=sqlite:///mlflow.db: trials on Databricks cannot write to this machine's MLflow store",
    ):
        assert sum(message in e for e in errors) == 1, (message, errors)


BAD_OPTIONS = [
    (["hydra.launcher.n_jobs=0"], "hydra.launcher.n_jobs=0: runs at once, 1 or more"),
    (["hydra.launcher.upload_dir=null"], "hydra.launcher.upload_dir is not set"),
    (
        ["hydra.launcher.new_cluster=null"],
        "hydra.launcher.new_cluster and hydra.launcher.existing_cluster_id are both empty",
    ),
    (["+hydra.launcher.new_cluster.num_worker=1"], "hydra.launcher.new_cluster.num_worker: not a cluster setting"),
    (["~hydra.launcher.new_cluster.spark_version"], "hydra.launcher.new_cluster.spark_version is missing"),
    (
        ["hydra.launcher.new_cluster.azure_attributes.availability=SPOT"],
        "hydra.launcher.new_cluster.azure_attributes.availability=SPOT: choose one of",
    ),
    (["hydra.launcher.libraries=[{pip:peft}]"], "hydra.launcher.libraries[0]={'pip': 'peft'}: a library is one of"),
    (["hydra.launcher.timeout=-1"], "hydra.launcher.timeout=-1: seconds a run may take"),
    (["hydra.launcher.poll_interval=0"], "hydra.launcher.poll_interval=0.0: a number of seconds above 0"),
    (["hydra.launcher.wheel=/no/such.whl"], "hydra.launcher.wheel=/no/such.whl: no such wheel file"),
]


@pytest.mark.parametrize("overrides, message", BAD_OPTIONS, ids=[o[0] for o, _ in BAD_OPTIONS])
def test_a_bad_option_names_the_key_and_the_fix(overrides: list[str], message: str) -> None:
    launcher = _launcher(*overrides)
    errors = _problems(lambda: _checks.Options.parse(launcher.options))
    assert len(errors) == 1 and message in errors[0], errors


def test_no_credentials_are_reported_without_the_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("DATABRICKS_", "ARM_", "AZURE_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.databrickscfg
    errors = _problems(lambda: _checks.client_for(None, _checks.CHECK_RETRY_S, _checks.CHECK_HTTP_TIMEOUT_S))
    assert len(errors) == 1 and "Databricks credentials: no usable credentials" in errors[0], errors
    assert "DATABRICKS_HOST and DATABRICKS_TOKEN" in errors[0]


# As a user meets them: exit status 2, one `error:` line, nothing submitted or uploaded.
BAD_INPUT = [
    pytest.param([], {"DATABRICKS_TOKEN": "dapi-not-the-right-token"}, "refused the credentials", id="wrong-token"),
    pytest.param([], {"DATABRICKS_HOST": "dead"}, "does not answer", id="dead-host"),
    pytest.param(
        ["hydra.launcher.upload_dir=/dbfs/tmp/sweeps"],
        {},
        "hydra.launcher.upload_dir=/dbfs/tmp/sweeps: not a Unity Catalog volume path",
        id="bad-option",
    ),
]


@pytest.mark.parametrize("overrides, env_changes, message", BAD_INPUT)
def test_bad_input_exits_2_before_anything_is_submitted(
    workspace: FakeWorkspace,
    outputs: Path,
    tmp_path: Path,
    overrides: list[str],
    env_changes: dict[str, str],
    message: str,
) -> None:
    env = user_env(workspace, outputs, tmp_path)
    for key, value in env_changes.items():
        env[key] = f"http://127.0.0.1:{_free_port()}" if value == "dead" else value
    args = ["train", "-m", *DATABRICKS_COMPUTE, *TINY_TRAIN, "tracking.uri=http://127.0.0.1:9", *overrides]
    result = sweeps_cli(args, tmp_path, env)  # the checks' own retry window is seconds; this bound is for a hang
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
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
