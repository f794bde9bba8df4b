"""Throughput of the tutorial recipe and of sweeps' training path, on the same model and data, in one run.

    python benchmarks/throughput.py --device cpu     # a small GPT-2 on this machine's CPU
    python benchmarks/throughput.py --device cuda    # GPT-2 124M on an H100/H200 (bf16, compile, fused AdamW)

The tutorial recipe: the Hugging Face Trainer, fp32, every example padded to 1024 tokens, batch 2, the LM head.
sweeps: length-grouped classifier batches padded to their longest member, and causal-LM rows packed with whole
documents (positions restart, no attention across documents), the LM head applied in chunks; on CUDA also bf16
autocast, fused AdamW, torch.compile and pinned-memory prefetch. Both train from the same random init on the
IMDB reviews in ../shared (SWEEPS_SHARED). Printed: real (non-pad) tokens/s, padded tokens/s, MFU on CUDA
(against a bf16 matmul peak measured here), peak memory, time to first step, data preparation cold vs cached,
eval accuracy of a slow and a fast path on the same budget of examples, and the ratios. The last line is
`speedup vs tutorial recipe: N.NNx` (real tokens/s, the slower of sweeps' two paths, same run).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SWEEPS_SHARED", ROOT.parent / "shared")).resolve()
PAD_ID = 50256
WARMUP = 0.1  # fraction of the steps spent warming the learning rate up, in every recipe

# Per device: model size, batch sizes, steps (timed after warm-up) and the accuracy budget.
SETTINGS = {
    "cpu": dict(
        arch=dict(layers=2, heads=2, hidden=128),
        cls_batch=16,
        lm_batch=4,
        steps=12,
        warm=2,
        acc_examples=1920,
        acc_batch=16,
        acc_lr=1e-3,
        acc_max_length=512,
        eval_examples=1000,
    ),
    "cuda": dict(
        arch=dict(layers=12, heads=12, hidden=768),
        cls_batch=64,
        lm_batch=16,
        steps=40,
        warm=8,
        acc_examples=2000,
        acc_batch=16,
        acc_lr=1e-4,
        acc_max_length=1024,
        eval_examples=2000,
    ),
}


@dataclass
class Result:
    name: str
    real_tokens_s: float
    padded_tokens_s: float
    seconds: float
    first_step_s: float
    peak_mem_gb: float
    flops_per_token: float

    def mfu(self, peak: float | None) -> str:
        if not peak:
            return "-"
        padded = self.padded_tokens_s * self.flops_per_token / peak
        return f"{padded:6.1%} ({self.real_tokens_s * self.flops_per_token / peak:.1%} real)"


class PeakMemory:
    """Peak memory of a phase: CUDA's allocator high-water mark, or the process RSS sampled every 20 ms."""

    def __init__(self, device: str) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        import torch

        if self.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            import psutil

            self.proc, self.peak, self.stop = psutil.Process(), 0, threading.Event()
            self.base = self.proc.memory_info().rss

            def sample() -> None:
                while not self.stop.is_set():
                    self.peak = max(self.peak, self.proc.memory_info().rss)
                    time.sleep(0.02)

            self.thread = threading.Thread(target=sample, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.device == "cuda":
            self.gb = torch.cuda.max_memory_allocated() / 1e9
        else:
            self.stop.set()
            self.thread.join()
            self.gb = max(0, self.peak - self.base) / 1e9


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def measured_peak_flops() -> float:
    """bf16 matmul throughput of this GPU, as the anchors measure it."""
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn_like(a)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 / ((time.perf_counter() - start) / 10)


def flops_per_token(model, seq: float, lm_head: bool) -> float:
    """6·(non-embedding params, plus the LM head's matmul) + 12·layers·width·seq."""
    config = model.config
    width = config.hidden_size
    embeddings = config.vocab_size * width + config.max_position_embeddings * width
    params = sum(p.numel() for p in model.parameters()) - embeddings
    if lm_head:
        params += config.vocab_size * width
    return 6 * params + 12 * config.num_hidden_layers * width * seq


def build(arch: dict, task: str, seed: int = 0):
    """A GPT-2 of `arch` (the model group's size keys) with random weights, in float32, through sweeps' builder."""
    import torch

    from sweeps.model import build_model
    from sweeps.schema.model import ModelConfig

    torch.manual_seed(seed)
    cfg = ModelConfig(init="scratch", task="causal_lm" if task == "lm" else "classification", dtype="float32", **arch)
    return build_model(cfg, ["negative", "positive"], PAD_ID, PAD_ID + 1)


def tutorial_recipe(
    enc,
    arch: dict,
    device: str,
    steps: int,
    warm: int,
    task: str = "lm",
    batch: int = 2,
    lr: float = 2e-5,
    max_length: int = 1024,
) -> tuple[Result, object]:
    """The tutorial's way: HF Trainer, fp32, each example padded to max_length, its default sampler."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model = build(arch, task)
    counts: list[tuple[int, int]] = []

    def collate(rows):
        ids = torch.full((len(rows), max_length), PAD_ID)
        mask = torch.zeros((len(rows), max_length), dtype=torch.long)
        for i, row in enumerate(rows):
            x = torch.as_tensor(row["ids"][:max_length])
            ids[i, : len(x)], mask[i, : len(x)] = x, 1
        counts.append((int(mask.sum()), mask.numel()))
        out = {"input_ids": ids, "attention_mask": mask}
        out["labels"] = ids.masked_fill(mask == 0, -100) if task == "lm" else torch.tensor([r["label"] for r in rows])
        return out

    marks: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                sync(device)
                marks["first"] = time.perf_counter()
            if state.global_step == warm:
                sync(device)
                marks["warm"] = time.perf_counter()

    rows = [{"ids": enc.row(i).tolist(), "label": int(enc.labels[i])} for i in range(len(enc))]
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="tutorial-"),
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=lr,
        weight_decay=0.01,
        warmup_steps=int(WARMUP * steps),
        report_to="none",
        logging_steps=10**9,
        save_strategy="no",
        eval_strategy="no",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
        seed=0,
        use_cpu=device == "cpu",
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[Clock()])
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        trainer.train()
        sync(device)
        end = time.perf_counter()
    timed = counts[warm:steps]
    real, padded = sum(c[0] for c in timed), sum(c[1] for c in timed)
    seconds = end - marks["warm"]
    result = Result(
        f"tutorial recipe (Trainer, fp32, pad {max_length}, batch {batch}, {'LM' if task == 'lm' else 'class'} head)",
        real / seconds,
        padded / seconds,
        seconds,
        marks["first"] - start,
        memory.gb,
        flops_per_token(model, max_length, task == "lm"),
    )
    return result, model


def sweeps_path(
    enc,
    arch: dict,
    device: str,
    steps: int,
    warm: int,
    task: str,
    batch: int,
    lr: float = 2e-5,
    max_length: int = 1024,
    padded: bool = False,
    ranks=None,
) -> tuple[Result, object]:
    """sweeps' loop (sweeps.loop.fit) with its batching: grouped dynamic padding, or packed rows; with `ranks`,
    this process's share of a data-parallel run (tokens/s then count every rank's)."""

    from sweeps import distributed
    from sweeps.compute import ComputeConfig, autocast, compiled
    from sweeps.loop import fit, training_step
    from sweeps.optimizer import OptimizerConfig, build_optimizer
    from sweeps.tokens import packed_batches, prefetch, train_batches

    lm = task == "lm"
    ranks = ranks or distributed.SINGLE
    shard = (ranks.rank, ranks.world)
    model = build(arch, task).to(device)
    compute = ComputeConfig(device=device, precision="auto", compile=device == "cuda")
    optimizer, scheduler = build_optimizer(
        OptimizerConfig(lr=lr, weight_decay=0.01, warmup_ratio=WARMUP), model, steps, device
    )
    if lm:
        batches = packed_batches(enc, max_length, batch, PAD_ID, seed=0, shard=shard)
    else:
        multiple = 64 if compute.compile else 1
        batches = (
            padded_batches(enc, batch, max_length)  # the slow way, in the same loop: only the batching differs
            if padded
            else train_batches(enc, batch, PAD_ID, lm_labels=False, seed=0, multiple=multiple, shard=shard)
        )
    batches = prefetch(batches, device)
    marks: dict[str, float] = {}
    seen = {"real": 0, "padded": 0}

    def counted():
        for step, batch_ in enumerate(batches, start=1):
            if step == warm + 1:
                sync(device)
                marks["warm"] = time.perf_counter()
                seen["real"] = seen["padded"] = 0
            seen["real"] += int(batch_["real_tokens"])
            seen["padded"] += batch_["input_ids"].numel()
            yield batch_

    with PeakMemory(device) as memory:
        fitted = fit(
            distributed.parallel(training_step(compiled(compute, model, lm), lm), ranks, device),
            counted(),
            optimizer,
            scheduler,
            steps=steps,
            grad_accum=1,
            max_grad_norm=1.0,
            autocast=autocast(compute, device),
            on_log=lambda *a: None,
            on_eval=lambda step: None,
            eval_every=0,
            log_every=10**9,
            progress=False,
            device_sync=lambda: sync(device),
            ranks=ranks,
            device=device,
        )
        end = time.perf_counter()
    seconds = end - marks["warm"]
    per_rank = distributed.gather((seen["real"], seen["padded"]), ranks)
    real, padded_tokens = sum(r for r, _ in per_rank), sum(p for _, p in per_rank)
    mean_row = seen["padded"] / ((steps - warm) * batch)
    name = (
        "sweeps causal LM (packed 1024-token rows, chunked LM head"
        if lm
        else "sweeps classifier (length-grouped dynamic padding"
    ) + (", bf16, compile, fused AdamW" if device == "cuda" else ", fp32")
    name += f", {ranks.world} processes, DDP)" if ranks.world > 1 else ")"
    result = Result(
        name,
        real / seconds,
        padded_tokens / seconds,
        seconds,
        fitted.first_step_seconds,
        memory.gb,
        flops_per_token(model, mean_row, lm),
    )
    return result, model


def data_parallel_classifier(enc, arch: dict, device: str, steps: int, warm: int, batch: int) -> Result:
    """One rank of sweeps' classifier path run in several processes (`--processes`): `batch` rows per process
    and step, gradients averaged by DDP."""
    from sweeps import distributed

    ranks, _ = distributed.join(device)  # on CUDA, accelerate makes cuda:LOCAL_RANK this process's device
    try:
        result, _ = sweeps_path(enc, arch, device, steps, warm, "cls", batch, ranks=ranks)
    finally:
        distributed.leave()
    return result


def data_preparation() -> tuple[float, float]:
    """Reading, selecting and tokenising IMDB: a cold cache, then the same call again as a sweep's later
    trials make it (the median of three)."""
    from omegaconf import OmegaConf

    from sweeps import dataset, tokenizer
    from sweeps.tokens import encode

    data = OmegaConf.structured(dataset.DatasetConfig(path=str(SHARED / "data" / "imdb"), seed=42))
    tok = tokenizer.load_tokenizer(
        OmegaConf.structured(tokenizer.TokenizerConfig(path=str(SHARED / "tokenizers" / "gpt2")))
    )
    cache = Path(tempfile.mkdtemp(prefix="sweeps-cache-"))
    times = []
    for _ in range(4):
        start = time.perf_counter()
        splits = dataset.load_splits(data, cache / "splits")
        encodings = encode(
            splits, tok, tokenizer.identity(tok), 1024, "classification", data, cache / "tokens", progress=False
        )
        times.append(time.perf_counter() - start)
    assert encodings.cached
    return times[0], float(np.median(times[1:]))


def padded_batches(enc, batch: int, max_length: int):
    """Batches in random order, every row padded to max_length (as the tutorial pads)."""
    from sweeps.tokens import collate

    rng = np.random.default_rng(0)
    while True:
        order = rng.permutation(len(enc))
        for start in range(0, len(order) - batch + 1, batch):
            yield collate(enc, order[start : start + batch], PAD_ID, lm_labels=False, multiple=max_length)


def accuracy_on_same_budget(
    train, evals, arch: dict, device: str, examples: int, batch: int, lr: float, max_length: int
) -> None:
    """The same examples, cut at the same length, through three paths: the tutorial's Trainer, sweeps' loop with
    every row padded to max_length in random order (slow), and sweeps' loop with length-grouped dynamic padding
    (fast). Slow and fast differ only in batching; their eval accuracies are compared against the binomial
    noise of the eval set."""
    import torch

    from sweeps.compute import ComputeConfig, autocast
    from sweeps.loop import evaluate_classifier

    steps = examples // batch
    accuracies = {}
    paths = (
        (f"Trainer, pad {max_length}", tutorial_recipe, {}),
        (f"slow: loop, pad {max_length}", sweeps_path, {"padded": True}),
        ("fast: loop, grouped dynamic", sweeps_path, {}),
    )
    for name, runner, extra in paths:
        kwargs = dict(task="cls", batch=batch, lr=lr, max_length=max_length, **extra)
        _, model = runner(train, arch, device, steps, min(2, steps - 1), **kwargs)
        model = model.to(device)
        amp = autocast(ComputeConfig(device=device), device)
        with torch.no_grad():
            result = evaluate_classifier(model, evals, 64, PAD_ID, device, amp, progress=False)
        accuracies[name] = float(np.mean(result.y_true == result.y_pred))
    (_, a), (_, b) = list(accuracies.items())[1:]
    noise = math.sqrt(0.25 / len(evals)) * math.sqrt(2)
    print(f"\naccuracy on the same {steps * batch} training examples, {len(evals)} eval reviews:")
    for name, value in accuracies.items():
        print(f"  {name:30s} {value:.4f}")
    print(
        f"  fast - slow {b - a:+.4f}; noise (1 s.d. of a difference of two accuracies) {noise:.4f}: "
        f"{'within' if abs(b - a) <= 2 * noise else 'OUTSIDE'} 2 s.d."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per recipe (after warm-up)")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--accuracy-only", action="store_true", help="only the accuracy comparison")
    parser.add_argument(
        "--processes", type=int, default=1, help="also run the classifier data parallel in N processes (GPUs)"
    )
    args = parser.parse_args()
    settings = SETTINGS[args.device]
    steps = (args.steps or settings["steps"]) + settings["warm"]
    warm = settings["warm"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from sweeps.tokens import Encoded

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no GPU is visible here; use --device cpu", file=sys.stderr)
        return 2
    card = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {card}; torch {torch.__version__}; model GPT-2 {settings['arch']} (random init)")

    cold, warm_prep = data_preparation()
    print(
        f"data preparation (read, select, tokenise 2000+2000 IMDB reviews): first {cold:.2f} s, "
        f"cached {warm_prep:.3f} s (median of 3) = {warm_prep / cold:.1%} of the first"
    )

    from omegaconf import OmegaConf

    from sweeps import dataset, tokenizer
    from sweeps.tokens import encode

    data = OmegaConf.structured(dataset.DatasetConfig(path=str(SHARED / "data" / "imdb"), seed=42))
    tok = tokenizer.load_tokenizer(
        OmegaConf.structured(tokenizer.TokenizerConfig(path=str(SHARED / "tokenizers" / "gpt2")))
    )
    splits = dataset.load_splits(data)
    enc = encode(
        splits,
        tok,
        tokenizer.identity(tok),
        1024,
        "classification",
        data,
        Path(tempfile.mkdtemp(prefix="sweeps-tokens-")),
        progress=False,
    )
    train: Encoded = enc.train
    lengths = train.lengths
    print(
        f"train reviews: mean {lengths.mean():.0f} tokens, median {np.median(lengths):.0f}, "
        f"{np.mean(lengths >= 1024):.1%} cut at 1024"
    )

    peak = measured_peak_flops() if args.device == "cuda" else None
    if peak:
        print(f"measured bf16 matmul peak: {peak / 1e12:.0f} TFLOP/s")
    if not args.accuracy_only:
        tutorial_cls, _ = tutorial_recipe(train, settings["arch"], args.device, steps, warm, task="cls")
        classifier, _ = sweeps_path(train, settings["arch"], args.device, steps, warm, "cls", settings["cls_batch"])
        tutorial_lm, _ = tutorial_recipe(train, settings["arch"], args.device, steps, warm, task="lm")
        causal, _ = sweeps_path(train, settings["arch"], args.device, steps, warm, "lm", settings["lm_batch"])
        rows = [(tutorial_cls, tutorial_cls, 1), (classifier, tutorial_cls, 1)]
        if args.processes > 1:
            from sweeps.distributed import launch

            spread = (train, settings["arch"], args.device, steps, warm, settings["cls_batch"])
            rows.append((launch(data_parallel_classifier, spread, args.processes), tutorial_cls, args.processes))
        rows += [(tutorial_lm, tutorial_lm, 1), (causal, tutorial_lm, 1)]

        print(
            f"\n{'recipe':78s} {'real tok/s':>11s} {'padded tok/s':>12s} {'MFU':>18s} {'peak mem':>9s} "
            f"{'1st step':>8s} {'speedup':>8s}"
        )
        for row, baseline, devices in rows:  # MFU per device: against the peak of all the run's devices
            print(
                f"{row.name:78s} {row.real_tokens_s:11,.0f} {row.padded_tokens_s:12,.0f} "
                f"{row.mfu(peak and peak * devices):>18s} "
                f"{row.peak_mem_gb:7.2f}GB {row.first_step_s:7.2f}s {row.real_tokens_s / baseline.real_tokens_s:7.2f}x"
            )

    if not args.skip_accuracy:
        n_eval, n_train, cut = settings["eval_examples"], settings["acc_examples"], settings["acc_max_length"]
        evals = Encoded.from_rows([enc.test.row(i)[:cut].tolist() for i in range(n_eval)], enc.test.labels[:n_eval])
        budget = Encoded.from_rows([train.row(i)[:cut].tolist() for i in range(n_train)], train.labels[:n_train])
        accuracy_on_same_budget(
            budget, evals, settings["arch"], args.device, n_train, settings["acc_batch"], settings["acc_lr"], cut
        )

    if not args.accuracy_only:
        lm_ratio = causal.real_tokens_s / tutorial_lm.real_tokens_s
        padding = tutorial_lm.padded_tokens_s / tutorial_lm.real_tokens_s
        print(
            f"\ncausal LM vs the tutorial recipe as written (LM head): {lm_ratio:.2f}x "
            f"(its padding alone costs {padding:.2f}x)"
        )
        if args.processes > 1:
            spread_row = rows[2][0]
            print(
                f"classifier in {args.processes} processes (DDP): {spread_row.real_tokens_s:,.0f} real tokens/s = "
                f"{spread_row.real_tokens_s / classifier.real_tokens_s:.2f}x one process"
                + (f" ({torch.get_num_threads()} threads shared by the processes)" if args.device == "cpu" else "")
            )
        print(f"speedup vs tutorial recipe: {classifier.real_tokens_s / tutorial_cls.real_tokens_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
