"""An Optuna sweep of real trials (small scratch models on the shared IMDB sample) through our sweeper and local
launcher: trials in MLflow as children of one parent run, `compare`, and the MLflow UI in headless Chromium."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import OFFLINE_IMDB, ROOT, cli_env, free_port, run_cli, wait_http

# a sweep of real trials, then the MLflow UI in Chromium
pytestmark = pytest.mark.slow

TRIALS = 6
SWEEP = [
    "-m",
    "sweep=imdb_tpe",
    f"hydra.sweeper.n_trials={TRIALS}",
    "hydra.sweeper.workers=2",
    "hydra.sweeper.sampler.seed=7",
    "hydra.sweeper.study_name=imdb-tiny",
    "hydra.sweeper.pruner.n_startup_trials=2",
    "hydra.sweeper.pruner.n_warmup_steps=4",
    *OFFLINE_IMDB,
    "dataset.train_size=160",
    "dataset.validation_size=64",
    "dataset.test_size=64",
    "max_steps=8",
    "eval_every=4",
    "tracking.log_model=false",
    "save_checkpoint=false",
]
SCREENSHOTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory):
    cwd = tmp_path_factory.mktemp("sweep")
    done = run_cli(["train", *SWEEP], cwd, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return cwd, done


def _runs(cwd: Path):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweeps")
    return client, experiment, client.search_runs([experiment.experiment_id])


def test_trials_finish_and_nest_under_one_parent_run(sweep) -> None:
    import optuna

    cwd, _ = sweep
    study = optuna.load_study(study_name="imdb-tiny", storage=f"sqlite:///{cwd / 'outputs' / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    assert len(states) == TRIALS and set(states) <= {"COMPLETE", "PRUNED"}, states
    _, _, runs = _runs(cwd)
    (parent,) = [r for r in runs if r.data.tags.get("sweeps.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == TRIALS + 1 and len(children) == TRIALS
    assert sorted(int(r.data.tags["sweeps.trial"]) for r in children) == list(range(TRIALS))
    assert parent.data.tags["sweeps.objective"] == "accuracy" and "best_value" in parent.data.metrics
    pruned = {t.number for t in study.trials if t.state.name == "PRUNED"}
    for run in children:
        tagged = run.data.tags.get("sweeps.state") == "pruned"
        assert tagged == (int(run.data.tags["sweeps.trial"]) in pruned)


def test_rerun_resumes_without_duplicates(sweep) -> None:
    cwd, _ = sweep
    done = run_cli(["train", *SWEEP], cwd, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _, _, runs = _runs(cwd)
    assert len(runs) == TRIALS + 1  # the study was complete: nothing ran again


def test_compare_lists_the_trials(sweep) -> None:
    cwd, _ = sweep
    done = run_cli(["compare", "--format", "json"], cwd)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    rows = rows["trials"] if isinstance(rows, dict) else rows
    assert len(rows) == TRIALS
    done = run_cli(["compare"], cwd)
    assert done.returncode == 0 and "imdb-tiny" in done.stdout


def test_mlflow_ui_lists_the_sweep_in_chromium(sweep) -> None:
    from playwright.sync_api import sync_playwright

    cwd, _ = sweep
    _, experiment, runs = _runs(cwd)
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=300, proc=server)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs")
            page.get_by_text("imdb-tiny", exact=True).wait_for(timeout=300_000)
            page.locator("button:near(:text-is('imdb-tiny'))").first.click()  # expand the parent run
            for number in range(TRIALS):
                page.get_by_text(f"imdb-tiny-trial-{number}", exact=True).wait_for(timeout=120_000)
            SCREENSHOTS.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "mlflow_ui_sweep.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (SCREENSHOTS / "mlflow_ui_sweep.png").stat().st_size > 10_000
