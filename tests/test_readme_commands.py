"""Every command the README shows composes to what it promises: the config it names, the sweeper and the
launcher that will run it (compute=databricks selects the Databricks launcher whatever the order)."""

from __future__ import annotations

import re
import shlex

import pytest
from support import ROOT

from sweeps.__main__ import COMMANDS
from sweeps.compose import compose

LOCAL = "hydra_plugins.sweeps_local_launcher.local_launcher.LocalLauncher"
DATABRICKS = "hydra_plugins.sweeps_databricks_launcher.databricks_launcher.DatabricksLauncher"
OPTUNA = "hydra_plugins.sweeps_optuna_sweeper.optuna_sweeper.SweepsOptunaSweeper"


def readme_commands() -> list[list[str]]:
    """The `python -m sweeps ...` commands of the README's bash blocks, comments and line breaks removed."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                for i, word in enumerate(words):
                    if word.endswith("python") and words[i + 1 : i + 3] == ["-m", "sweeps"]:
                        commands.append(words[i + 3 :])
    return commands


def one_job(words: list[str]) -> list[str]:
    """A multirun's overrides as one of its jobs: each swept value list `a=1,2` takes its first value."""
    overrides = []
    for word in words:
        if word.startswith("-"):
            continue
        key, _, value = word.partition("=")
        if "," in value and not value.startswith(("[", "{", "'", '"')) and "(" not in value:
            value = value.split(",")[0]
        overrides.append(f"{key}={value}")
    return overrides


TRAIN = [c[1:] for c in readme_commands() if c[:1] == ["train"]]


def test_the_readme_shows_the_commands_it_documents() -> None:
    commands = readme_commands()
    assert len(TRAIN) >= 10
    assert {c[0] for c in commands} >= {"train", "compare", "promote", "deploy", "ui", "--help"}
    assert {c[0] for c in commands if not c[0].startswith("-")} <= {"train", *COMMANDS}


@pytest.mark.parametrize("words", TRAIN, ids=[" ".join(c) for c in TRAIN])
def test_each_train_command_composes_with_the_sweeper_and_launcher_it_promises(words: list[str]) -> None:
    cfg = compose(one_job(words), with_hydra=True)
    launcher = cfg.hydra.launcher._target_
    sweeper = cfg.hydra.sweeper._target_
    assert launcher == (DATABRICKS if "compute=databricks" in words else LOCAL)
    assert sweeper == OPTUNA  # a grid without a sweep preset, as the study a preset describes with one
    preset = any(w.startswith("sweep=") for w in words)
    assert (cfg.hydra.sweeper.sampler.name == "grid") == (not preset)


@pytest.mark.parametrize("order", [["sweep=imdb_tpe", "compute=databricks"], ["compute=databricks", "sweep=imdb_tpe"]])
def test_compute_databricks_selects_its_launcher_in_either_order(order: list[str]) -> None:
    cfg = compose(order, with_hydra=True)
    assert cfg.hydra.launcher._target_ == DATABRICKS
    assert cfg.hydra.sweeper._target_ == OPTUNA


def test_changing_only_the_budget_keeps_the_study_name() -> None:
    """The study's default name digests the search space, directions and the job's (task) overrides; the budget
    (hydra.sweeper.n_trials, timeout, workers) is a Hydra override, so a rerun with more trials continues it."""
    from hydra_plugins.sweeps_optuna_sweeper._options import Options
    from hydra_plugins.sweeps_optuna_sweeper._prepare import _default_study_name

    names = set()
    for budget in ([], ["hydra.sweeper.n_trials=40", "hydra.sweeper.timeout=600", "hydra.sweeper.workers=2"]):
        cfg = compose(["sweep=imdb_tpe", "lr=1e-4", *budget], with_hydra=True)
        arguments = list(cfg.hydra.overrides.task)  # what Hydra hands the sweeper
        assert not any(a.startswith("hydra.") for a in arguments)
        names.add(_default_study_name(cfg, Options.parse(cfg.hydra.sweeper), arguments))
    assert len(names) == 1
    other = compose(["sweep=imdb_tpe", "lr=2e-4"], with_hydra=True)
    assert _default_study_name(other, Options.parse(other.hydra.sweeper), list(other.hydra.overrides.task)) not in names
