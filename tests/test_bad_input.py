"""Bad input: one clear message naming the key and the fix, exit status 2, nothing trained or tracked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import GPT2_TOKENIZER, IMDB, OFFLINE_IMDB, free_port, run_cli


def _labels_out_of_range(tmp: Path) -> list[str]:
    path = tmp / "reviews.jsonl"
    rows = [{"text": f"review {i}", "label": i % 3} for i in range(30)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return ["dataset=files", f"dataset.path={path}", "dataset.validation_size=5", "dataset.test_size=5"]


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


CASES = {
    "unknown group option": (["model=gpt3"], "model/gpt3"),
    "unknown key": (["model.depth=3"], "model.depth"),
    "unknown top-level key": (["learning_rate=1e-3"], "learning_rate"),
    "wrong type": (["lr=fast"], "lr"),
    "zero learning rate": (["lr=0"], "lr=0.0: the learning rate must be > 0"),
    "negative learning rate": (["lr=-1e-5"], "lr=-1e-05"),
    "zero batch size": (["batch_size=0"], "batch_size=0"),
    "test_size larger than the split": (["dataset.test_size=5000"], "dataset.test_size=5000"),
    "missing data path": (["dataset.path=/no/such/folder"], "dataset.path=/no/such/folder"),
    "missing split": (["dataset.test_split=validation"], "dataset.test_split=validation"),
    "missing text column": (["dataset.text_column=review"], "dataset.text_column=review"),
    "missing label column": (["dataset.label_column=sentiment"], "dataset.label_column=sentiment"),
    "labels outside the classes": (_labels_out_of_range, "dataset.label_column=label"),
    "files dataset without a path": (["dataset=files", "~dataset.path"], "dataset.path"),
    "empty tokenizer folder": (_empty_tokenizer, "tokenizer.path="),
    "unreadable tokenizer folder": (_broken_tokenizer, "tokenizer.path="),
    "missing tokenizer folder": (["tokenizer.path=/no/such/tokenizer"], "tokenizer.path=/no/such/tokenizer"),
    "unknown objective": (["objective=bleu"], "objective=bleu"),
    "heads do not divide width": (["model.n_embd=65"], "model.n_embd=65"),
    "sequence longer than the model": (["tokenizer.max_length=2048"], "tokenizer.max_length=2048"),
    "unknown task": (["model.task=regression"], "model.task=regression"),
    "tracking server down": (_dead_tracking_server, "tracking.uri=http://127.0.0.1:"),
    "no processes": (["compute.processes=0"], "compute.processes=0"),
    # found by the parent before any rank starts
    "bad column, two processes": (["compute.processes=2", "dataset.text_column=review"], "dataset.text_column=review"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_exits_2_with_one_message(case: str, tmp_path: Path) -> None:
    extra, key = CASES[case]
    args = extra(tmp_path) if callable(extra) else extra
    if "=files" in " ".join(args) and case == "files dataset without a path":
        args = [a for a in OFFLINE_IMDB if not a.startswith("dataset.path")] + args[:1]
    else:
        args = [*OFFLINE_IMDB, *args]
    done = run_cli(["train", *args], tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert key in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "outputs" / "mlflow.db").exists(), "an MLflow store was created"


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    done = run_cli(["train", *OFFLINE_IMDB, "lr=0", "batch_size=0", "dataset.test_size=-1"], tmp_path, timeout=120)
    assert done.returncode == 2
    assert "3 problems" in done.stderr
    for key in ("lr=0.0", "batch_size=0", "dataset.test_size=-1"):
        assert key in done.stderr


def test_hub_out_of_reach_names_the_offline_alternative(tmp_path: Path) -> None:
    done = run_cli(["train", "model=gpt2", "lr=2e-5"], tmp_path, timeout=120, HF_HUB_OFFLINE="1")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) <= 2, done.stderr
    assert "Hub is out of reach" in done.stderr
    assert "dataset.path=" in done.stderr and "tokenizer.path=" in done.stderr and "experiment=offline" in done.stderr
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_pretrained_model_offline_is_reported(tmp_path: Path) -> None:
    args = [f"dataset.path={IMDB}", f"tokenizer.path={GPT2_TOKENIZER}", "model=distilgpt2", "compute=cpu"]
    done = run_cli(["train", *args], tmp_path, timeout=120, HF_HUB_OFFLINE="1")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "model.name=distilgpt2" in done.stderr and "model.init=scratch" in done.stderr
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_unknown_command(tmp_path: Path) -> None:
    done = run_cli(["trian"], tmp_path)
    assert done.returncode == 2 and "unknown command 'trian'" in done.stderr
