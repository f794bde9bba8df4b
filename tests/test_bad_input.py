"""Bad input: one clear message naming the key and the fix, exit status 2, nothing trained or tracked.

The checks are tested in this process, stage by stage as `sweeps.train.train` meets them: composing the config,
the preflight (no data loaded), then reading the data and the tokenizer. A few cases run the command line as a
user does, for what only a process shows: the exit status, the one line on stderr, no traceback, no store."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import GPT2_TOKENIZER, IMDB, OFFLINE_IMDB, SHARED, free_port, run_cli

from sweeps import dataset, tokenizer
from sweeps.compose import compose
from sweeps.errors import ConfigError, report
from sweeps.train import preflight


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This process as a user's shell runs the command: in tmp_path, no tracking URI, the Hub out of reach."""
    monkeypatch.chdir(tmp_path)
    for key in ("MLFLOW_TRACKING_URI", "SWEEPS_OUTPUTS", "SWEEPS_PARENT_RUN_ID", "SWEEPS_PROGRESS_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SWEEPS_SHARED", str(SHARED))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield tmp_path
    assert not (tmp_path / "outputs").exists(), "a check wrote to outputs/ (an MLflow store, a run dir, a cache)"


def _problems(call: Callable[[], object]) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        call()
    return raised.value.errors


def _one_problem(call: Callable[[], object], key: str) -> None:
    errors = _problems(call)
    assert len(errors) == 1, errors
    assert key in errors[0], errors


def _labels_out_of_range(tmp: Path) -> list[str]:
    path = tmp / "reviews.jsonl"
    rows = [{"text": f"review {i}", "label": i % 3} for i in range(30)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return ["dataset=files", f"dataset.path={path}", "dataset.test_size=5"]


def _empty_tokenizer(tmp: Path) -> list[str]:
    (tmp / "tok").mkdir()
    return [f"tokenizer.path={tmp / 'tok'}"]


def _broken_tokenizer(tmp: Path) -> list[str]:
    (tmp / "tok").mkdir()
    (tmp / "tok" / "vocab.json").write_text("{not json")
    (tmp / "tok" / "merges.txt").write_text("#version: 0.2\n")
    return [f"tokenizer.path={tmp / 'tok'}"]


def _dead_tracking_server(tmp: Path) -> list[str]:
    return [f"tracking.uri=http://127.0.0.1:{free_port()}"]


def _args(extra: list[str] | Callable[[Path], list[str]], tmp: Path) -> list[str]:
    return [*OFFLINE_IMDB, *(extra(tmp) if callable(extra) else extra)]


# Overrides that do not compose: compose() names the key.
COMPOSE = {
    "unknown key": (["model.depth=3"], "model.depth"),
    "unknown top-level key": (["learning_rate=1e-3"], "learning_rate"),
    "wrong type": (["lr=fast"], "lr"),
}

# Found by the preflight, before any data, tokenizer or model is loaded.
PREFLIGHT = {
    "zero learning rate": (["lr=0"], "lr=0.0: the learning rate must be > 0"),
    "negative learning rate": (["lr=-1e-5"], "lr=-1e-05"),
    "zero batch size": (["batch_size=0"], "batch_size=0"),
    "missing data path": (["dataset.path=/no/such/folder"], "dataset.path=/no/such/folder"),
    "missing tokenizer folder": (["tokenizer.path=/no/such/tokenizer"], "tokenizer.path=/no/such/tokenizer"),
    "unknown objective": (["objective=bleu"], "objective=bleu"),
    "heads do not divide width": (["model.hidden=65"], "model.hidden=65"),
    "sequence longer than the model": (["tokenizer.max_length=2048"], "tokenizer.max_length=2048"),
    "unknown task": (["model.task=regression"], "model.task=regression"),
    "tracking server down": (_dead_tracking_server, "tracking.uri=http://127.0.0.1:"),
    "no processes": (["compute.processes=0"], "compute.processes=0"),
}

# Found when the data is read.
DATA = {
    "test_size larger than the split": (["dataset.test_size=5000"], "dataset.test_size=5000"),
    "missing split": (["dataset.test_split=validation"], "dataset.test_split=validation"),
    "missing text column": (["dataset.text_column=review"], "dataset.text_column=review"),
    "missing label column": (["dataset.label_column=sentiment"], "dataset.label_column=sentiment"),
    "labels outside the classes": (_labels_out_of_range, "dataset.label_column=label"),
}

# Found when the tokenizer is loaded.
TOKENIZER = {
    "empty tokenizer folder": (_empty_tokenizer, "tokenizer.path="),
    "unreadable tokenizer folder": (_broken_tokenizer, "tokenizer.path="),
}


@pytest.mark.parametrize("case", list(COMPOSE), ids=list(COMPOSE))
def test_overrides_that_do_not_compose(case: str, project: Path) -> None:
    extra, key = COMPOSE[case]
    _one_problem(lambda: compose(_args(extra, project)), key)


def test_unknown_group_option_names_the_choices(project: Path) -> None:
    errors = _problems(lambda: compose([*OFFLINE_IMDB, "model=gpt3"]))
    assert errors == [errors[0]] and errors[0].startswith("model=gpt3: no such option in conf/model/"), errors
    assert "choose one of distilgpt2, gemma3_1b, gpt2," in errors[0]


@pytest.mark.parametrize("case", list(PREFLIGHT), ids=list(PREFLIGHT))
def test_preflight_names_the_key_and_the_fix(case: str, project: Path) -> None:
    extra, key = PREFLIGHT[case]
    cfg = compose(_args(extra, project))
    _one_problem(lambda: preflight(cfg), key)


def test_files_dataset_without_a_path(project: Path) -> None:
    args = [a for a in OFFLINE_IMDB if not a.startswith("dataset.path")]
    cfg = compose([*args, "dataset=files"])
    _one_problem(lambda: preflight(cfg), "dataset.path is missing: set dataset.path=")


@pytest.mark.parametrize("case", list(DATA), ids=list(DATA))
def test_data_problems_are_found_when_it_is_read(case: str, project: Path) -> None:
    extra, key = DATA[case]
    cfg = compose(_args(extra, project))
    preflight(cfg)  # nothing wrong that shows without the data
    _one_problem(lambda: dataset.load_splits(cfg.dataset), key)


@pytest.mark.parametrize("case", list(TOKENIZER), ids=list(TOKENIZER))
def test_tokenizer_problems_are_found_when_it_is_loaded(case: str, project: Path) -> None:
    extra, key = TOKENIZER[case]
    cfg = compose(_args(extra, project))
    preflight(cfg)
    dataset.load_splits(cfg.dataset)
    _one_problem(lambda: tokenizer.load_tokenizer(cfg.tokenizer), key)


def test_the_good_config_passes_every_check(project: Path) -> None:
    """The base of every case above is itself fine: each case fails for its one change."""
    cfg = compose(OFFLINE_IMDB)
    preflight(cfg)
    splits = dataset.load_splits(cfg.dataset)
    assert len(splits.train) and len(splits.validation) and len(splits.test)
    assert tokenizer.load_tokenizer(cfg.tokenizer).pad_token is not None


def test_every_problem_reported_at_once(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = compose([*OFFLINE_IMDB, "lr=0", "batch_size=0", "dataset.test_size=-1"])
    errors = _problems(lambda: preflight(cfg))
    assert len(errors) == 3, errors
    report(ConfigError(*errors))
    err = capsys.readouterr().err
    assert err.startswith("error: 3 problems:\n")
    for key in ("lr=0.0", "batch_size=0", "dataset.test_size=-1"):
        assert key in err


# ---------------------------------------------------------------- the command line
def _exits_2_with_one_error_line(done, key: str, tmp_path: Path) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "outputs" / "mlflow.db").exists(), "an MLflow store was created"


def test_cli_unknown_group_option(tmp_path: Path) -> None:
    """Hydra reports a config that does not compose itself (its message, not an `error:` line); exit 2."""
    done = run_cli(["train", *OFFLINE_IMDB, "model=gpt3"], tmp_path, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "model/gpt3" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "outputs").exists(), "the run started"


def test_cli_missing_data_path(tmp_path: Path) -> None:
    done = run_cli(["train", *OFFLINE_IMDB, "dataset.path=/no/such/folder"], tmp_path, timeout=300)
    _exits_2_with_one_error_line(done, "dataset.path=/no/such/folder", tmp_path)


def test_cli_bad_column_two_processes(tmp_path: Path) -> None:
    """Found by the parent before any rank starts."""
    args = [*OFFLINE_IMDB, "compute.processes=2", "dataset.text_column=review"]
    done = run_cli(["train", *args], tmp_path, timeout=300)
    _exits_2_with_one_error_line(done, "dataset.text_column=review", tmp_path)


def test_hub_out_of_reach_names_the_offline_alternative(tmp_path: Path) -> None:
    done = run_cli(["train", "model=gpt2", "lr=2e-5"], tmp_path, timeout=300, HF_HUB_OFFLINE="1")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) <= 2, done.stderr
    assert "Hub is out of reach" in done.stderr
    assert "dataset.path=" in done.stderr and "tokenizer.path=" in done.stderr and "experiment=offline" in done.stderr
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_pretrained_model_offline_is_reported(tmp_path: Path) -> None:
    args = [f"dataset.path={IMDB}", f"tokenizer.path={GPT2_TOKENIZER}", "model=distilgpt2", "compute=cpu"]
    done = run_cli(["train", *args], tmp_path, timeout=300, HF_HUB_OFFLINE="1")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "model.name=distilgpt2" in done.stderr and "model.init=scratch" in done.stderr
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_unknown_command(tmp_path: Path) -> None:
    done = run_cli(["trian"], tmp_path)
    assert done.returncode == 2 and "unknown command 'trian'" in done.stderr
