"""What the Databricks tests share: the fake's volume, launcher options, a user's environment, the sweeper's
test app swept on the fake workspace."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fakes.databricks import FakeWorkspace
from sweep_apps import App

VOLUME = "/Volumes/main/ml/sweeps"
CPU_CLUSTER = "{spark_version:'15.4.x-cpu-ml-scala2.12',node_type_id:Standard_D4ds_v5,num_workers:0}"
# hydra.launcher options for an app without a `compute` node (Hydra's launcher suites, test apps).
LAUNCHER = [
    f"hydra.launcher.upload_dir={VOLUME}/tests",
    f"hydra.launcher.new_cluster={CPU_CLUSTER}",
    "hydra.launcher.poll_interval=0.2",
    "hydra.launcher.progress_interval=0.2",
]


def user_env(workspace: FakeWorkspace, outputs: Path, home: Path) -> dict[str, str]:
    """A user's shell: credentials for the workspace in the environment, no ~/.databrickscfg."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "ARM_", "AZURE_", "MLFLOW_", "SWEEPS_"))
    }
    env.update(
        DATABRICKS_HOST=workspace.url,
        DATABRICKS_TOKEN=workspace.token,
        HOME=str(home),
        SWEEPS_OUTPUTS=str(outputs),
        HYDRA_FULL_ERROR="0",
        PYTHONUNBUFFERED="1",
    )
    return env


class TrialApp(App):
    """The sweeper's test app (tests/launchers/apps) swept on the fake workspace, run as a user runs it."""

    def __init__(self, tmp_path: Path, workspace: FakeWorkspace, outputs: Path) -> None:
        super().__init__(tmp_path)
        self.workspace = workspace
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        self.env = user_env(workspace, outputs, home)

    def command(self, *overrides: str) -> list[str]:
        return super().command("hydra/launcher=sweeps_databricks", *LAUNCHER, *overrides)

    def run(self, *overrides: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return super().run(*overrides, timeout=timeout)


def make_launcher(tmp_path: Path, overrides: list[str], task_function: Callable[..., Any]) -> Any:
    """A Databricks launcher set up as Hydra sets one up for a multirun of a small app in tmp_path."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext

    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    (app / "config.yaml").write_text("steps: 3\nseconds: 0.5\nvalue: 1.5\n")
    with initialize_config_dir(config_dir=str(app), version_base=None, job_name="dbx_task"):
        config = compose(
            "config",
            overrides=[
                "hydra/launcher=sweeps_databricks",
                *LAUNCHER,
                f"hydra.sweep.dir={tmp_path / 'multirun'}",
                *overrides,
            ],
            return_hydra_config=True,
        )
        context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks(config))
        return Plugins.instance().instantiate_launcher(
            hydra_context=context, task_function=task_function, config=config
        )


ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SWEEPS_SHARED", ROOT.parent / "shared")).resolve()
# `sweeps train` on a model small enough to train in seconds, on the CPU of the fake's one-node cluster.
TINY_TRAIN = [
    f"dataset.path={SHARED / 'data' / 'imdb'}",
    f"tokenizer.path={SHARED / 'tokenizers' / 'gpt2'}",
    "tokenizer.max_length=64",
    "model.init=scratch",
    "model.layers=1",
    "model.heads=2",
    "model.hidden=32",
    "model.dropout=0.0",
    "compute.device=cpu",
    "compute.precision=fp32",
    "compute.threads=1",
]
# compute=databricks on the fake workspace.
DATABRICKS_COMPUTE = [
    "compute=databricks",
    f"hydra.launcher.upload_dir={VOLUME}/cli",
    f"hydra.launcher.new_cluster={CPU_CLUSTER}",
    "hydra.launcher.poll_interval=0.3",
    "hydra.launcher.progress_interval=0.3",
]


def sweeps_cli(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m sweeps ARGS` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "sweeps", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
