"""Data-parallel training over real processes (gloo on the CPU): the same arithmetic as one process, one
MLflow run, rank 0 alone writing, the whole eval set scored, a stop reaching every rank."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from support import OFFLINE_IMDB, cli_env, run_cli
from sweep_apps import alive, wait_for

from sweeps import distributed
from sweeps.distributed import Ranks

RUN = [
    *OFFLINE_IMDB,
    "dataset.train_size=400",
    "dataset.validation_size=200",
    "dataset.test_size=200",
    "eval_every=10",
    "lr=1e-3",
]


def tiny_classifier() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=500, num_labels=2, pad_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return GPT2ForSequenceClassification(config)


def global_batches(steps: int, size: int) -> list[dict[str, torch.Tensor]]:
    """Right-padded rows of random lengths; the same on every rank (seeded)."""
    rng = np.random.default_rng(1)
    out = []
    for _ in range(steps):
        lengths = rng.integers(5, 40, size)
        ids = np.zeros((size, 40), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, n in enumerate(lengths):
            ids[i, :n] = rng.integers(1, 500, n)
            mask[i, :n] = 1
        out.append({
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(rng.integers(0, 2, size)),
        })  # fmt: skip
    return out


def train_share(steps: int, size: int, grad_accum: int) -> list[float]:
    """Train the tiny classifier on this rank's half of each global batch (all of it alone); the weights."""
    from sweeps.loop import fit, training_step

    ranks, device = distributed.join("cpu")
    model = tiny_classifier()
    step = distributed.parallel(training_step(model, causal_lm=False), ranks, device)
    share = size // ranks.world

    def batches():
        for batch in global_batches(steps * grad_accum, size):
            part = {k: v[ranks.rank * share : (ranks.rank + 1) * share] for k, v in batch.items()}
            yield {**part, "real_tokens": part["attention_mask"].sum()}

    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    fitted = fit(
        step, batches(), optimizer, scheduler, steps=steps, grad_accum=grad_accum, max_grad_norm=0.0,
        autocast=torch.autocast("cpu", enabled=False), on_log=lambda *a: None, on_eval=lambda s: None,
        eval_every=0, log_every=1, progress=False, ranks=ranks, device=device,
    )  # fmt: skip
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    every = distributed.gather(weights, ranks)
    assert all(torch.equal(every[0], w) for w in every), "ranks drifted apart"
    assert fitted.tokens == sum(int(b["attention_mask"].sum()) for b in global_batches(steps * grad_accum, size))
    distributed.leave()
    return weights.tolist()


@pytest.mark.slow
@pytest.mark.parametrize("grad_accum", [1, 2])
def test_two_ranks_take_the_steps_one_process_takes_on_the_whole_batch(grad_accum: int) -> None:
    alone = np.array(train_share(steps=4, size=8, grad_accum=grad_accum))
    together = np.array(distributed.launch(train_share, (4, 8, grad_accum), processes=2))
    start = torch.cat([p.detach().flatten() for p in tiny_classifier().parameters()]).numpy()
    assert np.abs(alone - start).max() > 1e-2, "training moved nothing"
    np.testing.assert_allclose(together, alone, rtol=0, atol=2e-5)


def test_batches_are_shared_out_without_overlap() -> None:
    from sweeps.tokens import Encoded, train_batches

    rng = np.random.default_rng(0)
    enc = Encoded.from_rows([list(range(1, n + 1)) for n in rng.integers(1, 50, 64)], np.arange(64))
    every = [b["labels"] for b in _take(train_batches(enc, 8, 0, False, seed=3), 8)]
    shares = [[b["labels"] for b in _take(train_batches(enc, 8, 0, False, seed=3, shard=(r, 2)), 4)] for r in (0, 1)]
    assert all(torch.equal(every[2 * i + r], shares[r][i]) for i in range(4) for r in (0, 1))
    assert sorted(torch.cat(every).tolist()) == list(range(64))  # one epoch: every example once


def _take(iterator, n: int) -> list:
    return [next(iterator) for _ in range(n)]


def test_ranks_object_reads_the_launcher_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert Ranks.from_env() == Ranks(rank=3, world=4, local=1)
    assert not Ranks.from_env().main


@pytest.mark.slow
def test_a_failing_rank_is_reported_with_its_traceback() -> None:
    with pytest.raises(RuntimeError, match=r"rank \d of 2 failed:(.|\n)*ZeroDivisionError"):
        distributed.launch(_divide_by_rank, (), processes=2)


def _divide_by_rank() -> float:
    return 1 / Ranks.from_env().rank


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory):
    cwd = tmp_path_factory.mktemp("ddp")
    # a multirun job in our local launcher's worker: the job's Hydra config (launcher schema and all) reaches the
    # ranks
    launch = ["-m", "hydra/launcher=sweeps_local", "hydra.sweep.dir=run", "hydra.sweep.subdir=."]
    done = run_cli(["train", *launch, *RUN, "max_steps=20", "compute.processes=2"], cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd, done


@pytest.mark.slow
def test_two_processes_make_one_tracked_run(two_process_run) -> None:
    cwd, done = two_process_run
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}")
    found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    runs = [r for r in found if "mlflow.parentRunId" in r.data.tags]  # the multirun's parent run aside
    assert len(found) == 2 and len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "eval_accuracy")] == [10, 20]
    log = (cwd / "run" / "train.log").read_text()
    assert "200 validation / 200 test examples" in log and "2 processes" in log
    assert log.count("step 20: accuracy") == 1, "only rank 0 reports"
    metrics = json.loads((cwd / "run" / "metrics.json").read_text())
    assert metrics["accuracy"] == runs[0].data.metrics["accuracy"]


@pytest.mark.slow
def test_sharded_evaluation_equals_the_whole_eval_set_scored_at_once(two_process_run) -> None:
    """The saved checkpoint, scored by one process over all 200 validation examples, gives the logged metrics."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sweeps import metrics as scoring
    from sweeps.loop import evaluate_classifier
    from sweeps.tokens import Encoded

    cwd, _ = two_process_run
    model = AutoModelForSequenceClassification.from_pretrained(cwd / "run" / "checkpoint")
    tok = AutoTokenizer.from_pretrained(cwd / "run" / "checkpoint")
    logged = json.loads((cwd / "run" / "metrics.json").read_text())
    splits = _validation_split(cwd)
    texts, labels = splits["text"].tolist(), splits["label"].to_numpy()
    assert len(texts) == 200
    ids = tok(texts, truncation=True, max_length=128)["input_ids"]
    result = evaluate_classifier(model, Encoded.from_rows(ids, labels), 32, tok.pad_token_id, "cpu", nullcontext())
    assert scoring.scores(result.y_true, result.y_pred, 2)["accuracy"] == pytest.approx(logged["accuracy"])
    assert result.loss == pytest.approx(logged["eval_loss"], rel=1e-4)


def _validation_split(cwd: Path):
    import pandas as pd

    (eval_file,) = (cwd / "outputs" / "cache" / "splits").glob("*.validation.parquet")
    return pd.read_parquet(eval_file)


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_stops_every_rank_and_marks_the_run_killed(processes: int, tmp_path: Path) -> None:
    driver = subprocess.Popen(
        [sys.executable, "-m", "sweeps", "train", *RUN, "max_steps=100000", f"compute.processes={processes}"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    store = tmp_path / "outputs" / "mlflow.db"
    wait_for(lambda: _statuses(store) == ["RUNNING"], 120, "the MLflow run to start")
    ranks = _children(driver.pid)
    assert processes == 1 or len(ranks) >= processes, "the ranks run as the run's child processes"
    driver.send_signal(signal.SIGTERM)
    output, _ = driver.communicate(timeout=60)
    assert driver.returncode == 130, output[-2000:]
    assert "interrupted: the run stopped" in output and "Traceback" not in output
    assert _statuses(store) == ["KILLED"]
    wait_for(lambda: not any(alive(pid) for pid in ranks), 15, "the ranks to end with their parent")


def _statuses(store: Path) -> list[str]:
    if not store.exists():
        return []
    try:
        with sqlite3.connect(store) as db:
            return [row[0] for row in db.execute("select status from runs")]
    except sqlite3.OperationalError:  # the schema is still being created
        return []


def _children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(p) for p in found]
