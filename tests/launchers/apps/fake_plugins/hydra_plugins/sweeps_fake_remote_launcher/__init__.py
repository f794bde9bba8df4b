"""Test launcher standing in for a remote one: its jobs have external ids a later driver attaches to.

Local jobs end with their driver, so `attach()` starts the job again from the overrides it was
submitted with (kept in $FAKE_REMOTE_REGISTRY), as if it had kept running on a cluster.
"""

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra_plugins.sweeps_local_launcher.config import LocalLauncherConf
from hydra_plugins.sweeps_local_launcher.local_launcher import LocalLauncher

from sweeps.launching import AttachableLauncher, JobHandle


@dataclass
class FakeRemoteLauncherConf(LocalLauncherConf):
    _target_: str = "hydra_plugins.sweeps_fake_remote_launcher.FakeRemoteLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="fake_remote", node=FakeRemoteLauncherConf, provider="tests")


def _registry() -> Path:
    return Path(os.environ["FAKE_REMOTE_REGISTRY"])


class FakeRemoteLauncher(LocalLauncher, AttachableLauncher):
    def submit(self, overrides: Sequence[str], job_idx: int, env: Mapping[str, str] | None = None) -> JobHandle:
        handle = super().submit(overrides, job_idx, env)
        handle.external_id = f"fake-{job_idx}"
        (_registry() / f"{handle.external_id}.json").write_text(json.dumps(list(overrides)))
        return handle

    def attach(self, external_id: str, job_idx: int, env: Mapping[str, str] | None = None) -> JobHandle:
        path = _registry() / f"{external_id}.json"
        if not path.exists():
            raise LookupError(f"no run {external_id}")
        with open(_registry() / "attached.txt", "a") as f:
            f.write(f"{external_id}\n")
        handle = super().submit(json.loads(path.read_text()), job_idx, env)
        handle.external_id = external_id
        return handle
