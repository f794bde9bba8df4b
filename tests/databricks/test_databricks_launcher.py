"""The Databricks launcher against Hydra's shared launcher suite, on the fake workspace."""

from __future__ import annotations

import pytest
from dbx_helpers import LAUNCHER
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import LauncherTestSuite
from hydra_plugins.sweeps_databricks_launcher.databricks_launcher import DatabricksLauncher


def test_discovery() -> None:
    assert DatabricksLauncher.__name__ in [x.__name__ for x in Plugins.instance().discover(Launcher)]


@pytest.mark.slow  # every job a run on the fake workspace
@pytest.mark.usefixtures("databricks_env")
@pytest.mark.parametrize("launcher_name, overrides", [("sweeps_databricks", [*LAUNCHER, "hydra.launcher.n_jobs=2"])])
class TestDatabricksLauncher(LauncherTestSuite):
    """Hydra's launcher suite; every job is a run on the fake workspace."""
