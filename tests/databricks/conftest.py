"""Fixtures of the Databricks tests: the fake workspace on loopback and a user's environment for it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbx_helpers import VOLUME, TrialApp
from fakes.databricks import FakeWorkspace


@pytest.fixture(scope="session")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SWEEPS_OUTPUTS for the whole session: the project's wheel is built once, into its cache."""
    return tmp_path_factory.mktemp("outputs")


@pytest.fixture
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeWorkspace]:
    fake = FakeWorkspace(tmp_path_factory.mktemp("workspace"), token="dapi" + secrets.token_hex(16))
    fake.create_volume(VOLUME)
    fake.extra_env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def databricks_env(
    workspace: FakeWorkspace, outputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> FakeWorkspace:
    """This process's environment pointed at the fake (for launchers run in-process)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    for key in list(os.environ):
        if key.startswith(("DATABRICKS_", "ARM_", "MLFLOW_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DATABRICKS_HOST", workspace.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", workspace.token)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SWEEPS_OUTPUTS", str(outputs))
    return workspace


@pytest.fixture
def trial_app(tmp_path: Path, workspace: FakeWorkspace, outputs: Path) -> TrialApp:
    return TrialApp(tmp_path, workspace, outputs)
