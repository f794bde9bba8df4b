"""The command line as users meet it: subcommands, Hydra's own flags, multirun, the MLflow UI."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from support import OFFLINE_IMDB, cli_env, free_port, run_cli, wait_http

HEAVY = ("torch", "transformers", "mlflow", "datasets", "pandas", "sklearn")


def _imports_after(argv: list[str], cwd: Path) -> tuple[int, str, set[str]]:
    code = (
        "import sys, json\nfrom sweeps.__main__ import main\n"
        "try:\n    rc = main(json.loads(sys.argv[1]))\nexcept SystemExit as e:\n    rc = e.code\n"
        "print('\\n@@' + json.dumps([rc, sorted(m for m in sys.modules if '.' not in m)]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(argv)], cwd=cwd, env=cli_env(), capture_output=True, text=True
    )
    head, _, tail = done.stdout.rpartition("\n@@")
    rc, modules = json.loads(tail)
    return rc, head, set(modules)


def test_help_lists_commands_without_heavy_imports(tmp_path: Path) -> None:
    rc, out, modules = _imports_after(["--help"], tmp_path)
    assert rc == 0
    for command in ("train", "compare", "ui"):
        assert f"\n  {command}" in out
    assert not modules & set(HEAVY), modules & set(HEAVY)


def test_hydra_help_and_cfg_without_heavy_imports(tmp_path: Path) -> None:
    rc, out, modules = _imports_after(["train", "--help"], tmp_path)
    assert rc in (0, None) and "dataset: files, imdb, sst2" in out and "model: distilgpt2, gemma3_1b, gpt2," in out
    assert not modules & set(HEAVY), modules & set(HEAVY)
    rc, out, modules = _imports_after(["train", "--cfg", "job", "--resolve", "lr=2e-5"], tmp_path)
    assert rc in (0, None)
    assert "lr: 2.0e-05" in out and out.count("2.0e-05") == 2  # the shortcut and optimizer.lr
    assert not modules & set(HEAVY)


def test_info_and_experiment_preset(tmp_path: Path) -> None:
    done = run_cli(["train", "--info", "defaults"], tmp_path)
    assert done.returncode == 0 and "dataset/imdb" in done.stdout
    done = run_cli(["train", "experiment=tutorial", "--cfg", "job", "--resolve"], tmp_path)
    assert done.returncode == 0
    for expected in (
        "lr: 2.0e-05",
        "batch_size: 2",
        "epochs: 3",
        "train_size: 1000",
        "test_size: 500",
        "weight_decay: 0.01",
        "seed: 42",
        "task: classification",
    ):
        assert expected in done.stdout, expected


@pytest.mark.slow
def test_multirun_grid_is_a_study_with_a_parent_run_and_runs_named_after_their_overrides(tmp_path: Path) -> None:
    args = [
        *OFFLINE_IMDB,
        "max_steps=3",
        "dataset.train_size=64",
        "dataset.validation_size=32",
        "dataset.test_size=32",
        "tracking.log_model=false",
    ]
    done = run_cli(["train", "-m", "lr=1e-3,2e-3", "batch_size=4,8", *args], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    points = sorted((r.data.params["lr"], r.data.params["batch_size"]) for r in children)
    assert points == [("0.001", "4"), ("0.001", "8"), ("0.002", "4"), ("0.002", "8")]
    assert all(r.info.status == "FINISHED" for r in runs)
    names = {r.info.run_name for r in children}
    assert names == {f"lr={lr} batch_size={bs}" for lr in ("0.001", "0.002") for bs in (4, 8)}, names
    (sweep_dir,) = (tmp_path / "outputs" / "sweeps").iterdir()
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) == [
        "0",
        "1",
        "2",
        "3",
    ]
    listed = run_cli(["compare", "--format", "json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    trials = json.loads(listed.stdout)["trials"]
    assert len(trials) == 4 and {t["run_id"] for t in trials} == {r.info.run_id for r in children}
    again = run_cli(["train", "-m", "lr=1e-3,2e-3", "batch_size=4,8", *args], tmp_path)  # the same grid: done
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])) == len(runs)


@pytest.mark.slow
def test_ui_serves_the_project_store(tmp_path: Path) -> None:
    import mlflow

    store = tmp_path / "outputs" / "mlflow.db"
    store.parent.mkdir()
    mlflow.MlflowClient(f"sqlite:///{store}").create_experiment("visible-in-ui")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeps", "ui", "--port", str(port)],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=300, proc=proc)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search",
            data=json.dumps({"max_results": 10}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            names = {e["name"] for e in json.load(response)["experiments"]}
        assert "visible-in-ui" in names
    finally:
        proc.terminate()
        proc.wait(timeout=30)
