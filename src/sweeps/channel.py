"""The channel between a sweep's trials and its sweeper: the environment variables that carry it, and the
operations on each side.

The sweeper gives each trial `trial_env(...)`: where to append its progress, the file whose presence asks
it to stop (prune), its study, its number, the sweep's MLflow parent run and, for a trial run again after an
interruption, the run dir of its previous attempt (`resume_dir()`: the trial continues from its checkpoint). The
trial names its run dir with `announce_run_dir(path)`, reports with `report(step, value)`, checks `pruned()`
between steps and tags its MLflow run with `sweep_tags()`. The sweeper reads the progress (and the run dir) with
a `ProgressReader` and prunes with `request_prune()`. A trial run outside a
sweep sees none of the variables: every operation then does nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

PROGRESS_FILE = "SWEEPS_PROGRESS_FILE"  # the trial appends {"step": int, "value": float} lines
PRUNE_FILE = "SWEEPS_PRUNE_FILE"  # the sweeper creates it to prune the trial
STUDY_NAME = "SWEEPS_STUDY_NAME"
TRIAL_NUMBER = "SWEEPS_TRIAL_NUMBER"
PARENT_RUN_ID = "SWEEPS_PARENT_RUN_ID"  # the sweep's MLflow run
RUN_NAME = "SWEEPS_RUN_NAME"  # the trial's MLflow run name, when the sweeper chooses one
DATABRICKS_RUN_ID = "SWEEPS_DATABRICKS_RUN_ID"  # set on the cluster by the Databricks launcher
RESUME_DIR = "SWEEPS_RESUME_DIR"  # the run dir of the trial's interrupted previous attempt

# Paths on the sweeper's machine: a trial that runs elsewhere gets the launcher's own in their place.
LOCAL_PATHS = (PROGRESS_FILE, PRUNE_FILE)


def _get(name: str, env: Mapping[str, str] | None) -> str | None:
    return (os.environ if env is None else env).get(name) or None


# ---------------------------------------------------------------- the trial's side
def progress_file(env: Mapping[str, str] | None = None) -> Path | None:
    """Where this trial reports its progress ($SWEEPS_PROGRESS_FILE of `env`, default os.environ), or None."""
    path = _get(PROGRESS_FILE, env)
    return Path(path) if path else None


def report(step: int, value: float) -> None:
    """Append one progress line {"step", "value"} for the sweeper (nothing outside a sweep)."""
    path = progress_file()
    if path is not None:
        with open(path, "a") as f:
            f.write(json.dumps({"step": int(step), "value": float(value)}) + "\n")


def report_run(run_id: str) -> None:
    """Tell the sweeper which MLflow run this trial writes (one progress line {"run_id"}; nothing outside a sweep)."""
    path = progress_file()
    if path is not None:
        with open(path, "a") as f:
            f.write(json.dumps({"run_id": run_id}) + "\n")


def announce_run_dir(path: Path) -> None:
    """Tell the sweeper where this trial's run dir (and checkpoints) is: one {"run_dir"} progress line."""
    target = progress_file()
    if target is not None:
        with open(target, "a") as f:
            f.write(json.dumps({"run_dir": str(path)}) + "\n")


def resume_dir() -> str | None:
    """The run dir this trial continues from (a rerun of an interrupted trial), or None."""
    return _get(RESUME_DIR, None)


def pruned() -> bool:
    """True once the sweeper has asked this trial to stop (its prune file exists)."""
    path = _get(PRUNE_FILE, None)
    return bool(path) and os.path.exists(path)


def study_name(env: Mapping[str, str] | None = None) -> str | None:
    return _get(STUDY_NAME, env)


def trial_number() -> int | None:
    """This trial's number in its study, None outside a sweep."""
    number = _get(TRIAL_NUMBER, None)
    return None if number is None else int(number)


def parent_run_id() -> str | None:
    """The MLflow run of the sweep this trial belongs to."""
    return _get(PARENT_RUN_ID, None)


def databricks_run_id() -> str | None:
    return _get(DATABRICKS_RUN_ID, None)


def sweep_tags() -> dict[str, str]:
    """MLflow tags that tie a trial's run to its sweep: parent run, study and trial number (when set)."""
    names = {"mlflow.parentRunId": PARENT_RUN_ID, "sweeps.study": STUDY_NAME, "sweeps.trial": TRIAL_NUMBER}
    return {tag: value for tag, name in names.items() if (value := _get(name, None))}


def run_name(default: str) -> str:
    """The name the sweeper chose (a grid point's overrides), else `<study>-trial-<n>` for a sweep's trial, else
    `default`."""
    if _get(RUN_NAME, None):
        return str(_get(RUN_NAME, None))
    number = _get(TRIAL_NUMBER, None)
    if number:
        return f"{_get(STUDY_NAME, None) or 'sweep'}-trial-{number}"
    return default


# ---------------------------------------------------------------- where the trial runs
def set_progress_file(path: Path | None) -> None:
    """Point this process (and the processes it starts) at another progress file, or at none."""
    if path is None:
        os.environ.pop(PROGRESS_FILE, None)
    else:
        os.environ[PROGRESS_FILE] = str(path)


def set_databricks_run_id(run_id: str) -> None:
    os.environ[DATABRICKS_RUN_ID] = run_id


def remote_env(env: Mapping[str, str]) -> dict[str, str]:
    """A trial's environment for another machine: without the paths that only the sweeper's machine has."""
    return {k: v for k, v in env.items() if k not in LOCAL_PATHS}


# ---------------------------------------------------------------- the sweeper's side
def trial_env(
    progress: Path,
    prune: Path,
    study: str,
    number: int,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    resume_from: str | None = None,
) -> dict[str, str]:
    """The environment a trial gets: its progress and prune files, its study and number, the parent run, the
    name of its MLflow run when the sweeper chooses one, and the run dir it resumes from."""
    env = {PROGRESS_FILE: str(progress), PRUNE_FILE: str(prune), STUDY_NAME: study, TRIAL_NUMBER: str(number)}
    if parent_run_id is not None:
        env[PARENT_RUN_ID] = parent_run_id
    if run_name:
        env[RUN_NAME] = run_name
    if resume_from is not None:
        env[RESUME_DIR] = resume_from
    return env


def request_prune(prune: Path) -> None:
    """Ask the trial to stop: it sees pruned() from its next check."""
    prune.touch()


class ProgressReader:
    """Reads the complete lines appended to one trial's progress file since the last read (and the run dir the
    trial announced, in `run_dir`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.last_step: int | None = None
        self.run_id: str | None = None  # the trial's MLflow run, once it has said
        self.run_dir: str | None = None

    def read(self) -> list[tuple[int, float]]:
        """New (step, value) reports, in order; malformed lines and repeated steps are skipped."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        reports = []
        for line in data[: end + 1].splitlines():
            try:
                record = json.loads(line)
                if "run_id" in record:
                    self.run_id = str(record["run_id"])
                if isinstance(record, dict) and "run_dir" in record:
                    self.run_dir = str(record["run_dir"])
                    continue
                step, value = int(record["step"]), float(record["value"])
            except (ValueError, KeyError, TypeError):
                continue
            if self.last_step is not None and step <= self.last_step:
                continue
            self.last_step = step
            reports.append((step, value))
        return reports
