"""The local launcher against Hydra's shared launcher suites, plus its own process handling."""

from __future__ import annotations

import os

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from hydra_plugins.sweeps_local_launcher._core import slot_envs
from hydra_plugins.sweeps_local_launcher.local_launcher import LocalLauncher

from sweeps.errors import ConfigError


def test_discovery() -> None:
    assert LocalLauncher.__name__ in [x.__name__ for x in Plugins.instance().discover(Launcher)]


@pytest.mark.slow  # jobs launched as processes
@pytest.mark.parametrize("launcher_name, overrides", [("sweeps_local", ["hydra.launcher.n_jobs=2"])])
class TestLocalLauncher(LauncherTestSuite):
    """Hydra's launcher suite; hydra/launcher/sweeps_local is registered by this plugin."""


@pytest.mark.slow  # jobs launched as processes
@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [
        (
            {
                "defaults": [
                    {"override hydra/launcher": "sweeps_local"},
                    {"override hydra/hydra_logging": "hydra_debug"},
                    {"override hydra/job_logging": "disabled"},
                ]
            },
            ["-m"],
        )
    ],
)
class TestLocalLauncherIntegration(IntegrationTestSuite):
    """Hydra's integration suite: real applications started as subprocesses."""


def test_one_slot_per_gpu_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    envs = slot_envs(None, 2, None)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0,1", "2,3"]
    assert all("MKL_NUM_THREADS" not in e and int(e["OMP_NUM_THREADS"]) >= 1 for e in envs)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in slot_envs(3, 2, 4)] == ["0,1", "2,3", "0,1"]
    assert slot_envs(3, 2, 4)[0]["OMP_NUM_THREADS"] == "4"
    with pytest.raises(ConfigError, match="hydra.launcher.gpus_per_job=8: only 4 GPUs are visible"):
        slot_envs(None, 8, None)


def test_cpu_slots_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    envs = slot_envs(2, 1, None)
    assert len(envs) == 2 and all("CUDA_VISIBLE_DEVICES" not in e for e in envs)
    assert envs[0]["OMP_NUM_THREADS"] == envs[0]["MKL_NUM_THREADS"] == str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert len(slot_envs(None, 1, None)) == 1
    with pytest.raises(ConfigError, match="hydra.launcher.n_jobs=0"):
        slot_envs(0, 1, None)
