"""Promotion on a real MLflow server: the best finished trial is registered; `champion` moves only on a win."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_support import EXPERIMENT, STUDY, TRIAL, Project, compose, free_port, run_cli, trained_sweep

from sweeps.errors import ConfigError
from sweeps.promote import main, promote_best


@pytest.fixture(scope="module")
def project(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Project:
    return trained_sweep(mlflow_server, tmp_path_factory.getbasetemp() / "deploy-project")


def _client(project: Project):
    from mlflow import MlflowClient

    return MlflowClient(project.tracking_uri)


def _aliases(project: Project, name: str) -> dict[str, str]:
    return dict(_client(project).get_registered_model(name).aliases)


@pytest.mark.slow  # the trained sweep
def test_the_best_finished_trial_of_the_latest_sweep_is_registered(project: Project) -> None:
    done = project.cli(["promote", *project.overrides("sweep-best")])
    assert done.returncode == 0, done.stderr[-3000:]
    client = _client(project)
    (version,) = client.search_model_versions("name = 'sweep-best'")
    # The failed trial reports a better eval_loss and the unevaluated one none: neither is ever promoted.
    assert version.run_id == project.better
    assert version.source.startswith("models:/m-")
    assert (
        version.tags["dataset.validation_fingerprint"]
        == client.get_run(project.better).data.tags["dataset.validation_fingerprint"]
    )
    assert _aliases(project, "sweep-best") == {"champion": version.version}
    assert f"sweep {STUDY}" in done.stdout and "eval_loss" in done.stdout and "champion: version 1" in done.stdout


@pytest.mark.slow  # the trained sweep
def test_champion_moves_on_a_win_and_stays_on_a_loss(project: Project) -> None:
    cfg = compose(project.overrides("duel"))
    first = promote_best(cfg, run_id=project.worse)
    assert first.alias == "champion" and "first champion" in first.message
    win = promote_best(cfg, run_id=project.better)
    assert win.alias == "champion" and win.previous_champion == first.version
    assert "beats the champion" in win.message and "minimize" in win.message
    assert _aliases(project, "duel") == {"champion": win.version}
    loss = promote_best(cfg, run_id=project.worse)
    assert loss.alias == "challenger" and loss.version == first.version
    assert f"does not beat champion version {win.version}" in loss.message and "same eval set" in loss.message
    assert _aliases(project, "duel") == {"champion": win.version, "challenger": first.version}
    again = promote_best(cfg, run_id=project.better)
    assert again.alias == "champion" and "already" in again.message
    assert len(_client(project).search_model_versions("name = 'duel'")) == 2


@pytest.mark.slow  # the trained sweep
def test_a_run_on_another_eval_set_becomes_challenger_unless_forced(project: Project) -> None:
    from mlflow.entities import Metric

    client = _client(project)
    better = client.get_run(project.better)
    tags = {"model_uri": better.data.tags["model_uri"], "dataset.validation_fingerprint": "0123456789abcdef"}
    other = client.create_run(better.info.experiment_id, run_name="other eval set", tags=tags)
    client.log_param(other.info.run_id, "objective", "eval_loss")
    client.log_batch(other.info.run_id, metrics=[Metric("eval_loss", 1e-3, 0, 1)])
    client.set_terminated(other.info.run_id, "FINISHED")
    cfg = compose(project.overrides("fingerprints"))
    champion = promote_best(cfg, run_id=project.better)
    rival = promote_best(cfg, run_id=other.info.run_id)
    assert rival.alias == "challenger" and "another eval set" in rival.message and "--force" in rival.message
    assert _aliases(project, "fingerprints")["champion"] == champion.version
    forced = promote_best(cfg, run_id=other.info.run_id, force=True)
    assert forced.alias == "champion" and _aliases(project, "fingerprints") == {"champion": forced.version}


@pytest.mark.slow  # the trained sweep
@pytest.mark.parametrize("role, reason", [("failed", "the run is failed"), ("unevaluated", "never evaluated")])
def test_a_failed_or_unevaluated_run_is_never_promoted(project: Project, role: str, reason: str) -> None:
    cfg = compose(project.overrides(f"never-{role}"))
    with pytest.raises(ConfigError, match=reason):
        promote_best(cfg, run_id=getattr(project, role))
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        _client(project).get_registered_model(f"never-{role}")


BAD_INPUT = {
    "no runs at all": (["tracking.experiment=nothing-here"], "tracking.experiment=nothing-here: no such experiment"),
    "unknown sweep": (["--sweep", "nope"], f"--sweep nope: no trials of that sweep in experiment '{EXPERIMENT}'"),
    "unknown run": (["--run", "0" * 32], f"--run {'0' * 32}: no such run"),
    "reserved alias": (["registry.champion_alias=latest"], "registry.champion_alias=latest"),
    "unknown key": (["registry.name=x"], "registry.name"),
}


@pytest.mark.slow  # the trained sweep
@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_names_the_key(project: Project, case: str, capsys: pytest.CaptureFixture) -> None:
    args, expected = BAD_INPUT[case]
    assert main([*project.overrides(f"bad-{case.replace(' ', '-')}"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert expected in err, err


def test_unity_catalog_needs_a_three_part_name(capsys: pytest.CaptureFixture) -> None:
    assert main(["tracking.uri=databricks", "registry.model_name=imdb"]) == 2
    err = capsys.readouterr().err
    assert "registry.model_name=imdb" in err and "catalog.schema.model" in err


def test_cli_exit_status_and_unreachable_tracking_server(tmp_path: Path) -> None:
    done = run_cli(["promote", f"tracking.uri=http://127.0.0.1:{free_port()}"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "tracking.uri=http://127.0.0.1:" in done.stderr and "does not answer" in done.stderr
    assert not (tmp_path / "outputs").exists()


TINY_TRIAL = [w for w in TRIAL if not w.startswith("objective=")]


def test_tracking_uri_override_promotes_from_a_local_store_as_the_environment_variable_does(tmp_path: Path) -> None:
    """`promote tracking.uri=sqlite:///...` finds the run's logged model in that store, run from another folder,
    and leaves no ./mlflow.db behind."""
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    trained = run_cli(
        ["train", *TINY_TRIAL, f"tracking.uri={store}", "tracking.experiment=local-store"], tmp_path / "store"
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_cli(
        ["promote", f"tracking.uri={store}", "tracking.experiment=local-store", "registry.model_name=local"], elsewhere
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "champion: version 1" in done.stdout
    assert not (elsewhere / "mlflow.db").exists() and not (elsewhere / "mlruns").exists()
    (version,) = MlflowClient(store, registry_uri=store).search_model_versions("name = 'local'")
    assert version.source.startswith("models:/m-")
