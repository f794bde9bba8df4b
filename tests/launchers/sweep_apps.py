"""Run the test apps under tests/launchers/apps as real Hydra processes, with their stores in tmp_path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

APPS = Path(__file__).parent / "apps"


class App:
    """One test app run from tmp_path: sweeps with `hydra.sweeper.storage` in tmp_path."""

    def __init__(self, tmp_path: Path, script: str = "trial_app.py") -> None:
        self.dir = tmp_path
        self.script = APPS / script
        self.storage = f"sqlite:///{tmp_path / 'optuna.db'}"
        self.record = tmp_path / "record.jsonl"
        self.env = _env()

    def command(self, *overrides: str) -> list[str]:
        return [
            sys.executable,
            str(self.script),
            "-m",
            f"hydra.sweeper.storage={self.storage}",
            f"hydra.sweep.dir={self.dir / 'multirun'}",
            f"record={self.record}",
            *overrides,
        ]

    def run(self, *overrides: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*overrides), cwd=self.dir, capture_output=True, text=True, timeout=timeout, env=self.env
        )

    def start(self, *overrides: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*overrides),
            cwd=self.dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )

    def with_fake_remote_launcher(self) -> Path:
        """Make hydra/launcher=fake_remote (apps/fake_plugins) available; returns its registry folder."""
        registry = self.dir / "registry"
        registry.mkdir(exist_ok=True)
        self.env["FAKE_REMOTE_REGISTRY"] = str(registry)
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(APPS / "fake_plugins"), self.env.get("PYTHONPATH")]))
        return registry

    def trials(self, study: str = "trial_app") -> list[optuna.trial.FrozenTrial]:
        """The study's trials; none while the study does not exist yet."""
        try:
            return optuna.load_study(study_name=study, storage=self.storage).get_trials()
        except KeyError:
            return []

    def states(self, study: str = "trial_app") -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.trials(study):
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        return counts

    def records(self, event: str | None = None) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        lines = [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]
        return [r for r in lines if event is None or r["event"] == event]

    def trial_count(self) -> int:
        """Trials in the storage, 0 when the database does not exist."""
        if not (self.dir / "optuna.db").exists():
            return 0
        storage = optuna.storages.RDBStorage(self.storage)
        ids = [storage.get_study_id_from_name(s.study_name) for s in storage.get_all_studies()]
        return sum(len(storage.get_all_trials(i)) for i in ids)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env["HYDRA_FULL_ERROR"] = "0"
    return env


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
