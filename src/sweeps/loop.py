"""The training loop and evaluation, top to bottom: batches in, loss down, metrics out."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sweeps import distributed
from sweeps.checkpoints import TrainingState
from sweeps.distributed import SINGLE, Ranks
from sweeps.tokens import Encoded, collate

if TYPE_CHECKING:
    import torch

# Positions per chunk when the LM head's logits are computed piecewise.
LOGIT_CHUNK = 1024
# Past this many bytes of fp32 logits for a batch, chunks are recomputed in the backward pass instead of kept.
LOGIT_BUDGET = 1 << 30


@dataclass
class Evaluation:
    """Predictions on the eval set and the losses behind them."""

    y_true: np.ndarray
    y_pred: np.ndarray
    # mean loss, over `count` examples (classifier) or tokens (label words)
    loss: float
    count: int

    @classmethod
    def merge(cls, parts: list[tuple[np.ndarray, Evaluation]]) -> Evaluation:
        """One evaluation from those of disjoint row subsets (the ranks' shards), rows back in order."""
        rows = np.concatenate([r for r, _ in parts])
        order = np.argsort(rows, kind="stable")
        count = sum(e.count for _, e in parts)
        return cls(
            y_true=np.concatenate([e.y_true for _, e in parts])[order],
            y_pred=np.concatenate([e.y_pred for _, e in parts])[order],
            loss=sum(e.loss * e.count for _, e in parts) / max(1, count),
            count=count,
        )


@dataclass
class FitResult:
    steps: int
    tokens: int
    padded_tokens: int
    seconds: float
    first_step_seconds: float
    last_loss: float


def lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy from the base model's hidden states, the LM head applied chunk by chunk; when
    the batch's fp32 logits would pass LOGIT_BUDGET, each chunk is checkpointed (recomputed in the backward
    pass), so they are never held at once."""
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    hidden = model.base_model(**inputs)[0]
    head = model.get_output_embeddings()
    hidden = hidden[:, :-1].reshape(-1, hidden.size(-1))
    targets = batch["labels"][:, 1:].reshape(-1)
    keep = targets != -100
    hidden, targets = hidden[keep], targets[keep]

    def chunk_loss(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h).float(), t, reduction="sum")

    recompute = hidden.requires_grad and targets.numel() * head.weight.shape[0] * 4 > LOGIT_BUDGET
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, targets.numel(), LOGIT_CHUNK):
        h, t = hidden[start : start + LOGIT_CHUNK], targets[start : start + LOGIT_CHUNK]
        total = total + (checkpoint(chunk_loss, h, t, use_reentrant=False) if recompute else chunk_loss(h, t))
    return total / max(1, targets.numel()) if reduction == "mean" else total


def training_step(model: torch.nn.Module, causal_lm: bool) -> torch.nn.Module:
    """A module whose forward is one micro-batch's loss, so that DDP sees (and syncs) the whole step: the
    classifier's own loss, or `lm_loss` for a causal LM."""
    import torch

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, **batch: torch.Tensor) -> torch.Tensor:
            return lm_loss(self.model, batch) if causal_lm else self.model(**batch).loss

    return Step()


def fit(
    step_loss: torch.nn.Module,
    batches: Iterator[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    steps: int,
    grad_accum: int,
    max_grad_norm: float,
    autocast,
    on_log: Callable[[int, float, float, float], None],
    on_eval: Callable[[int], bool | None],
    eval_every: int,
    log_every: int,
    progress: bool = True,
    device_sync: Callable[[], None] | None = None,
    ranks: Ranks = SINGLE,
    device: str = "cpu",
    stop: Callable[[], bool] | None = None,
    start: TrainingState | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[TrainingState], None] | None = None,
) -> FitResult:
    """Run `steps` optimizer steps of `step_loss` (a `training_step`, DDP-wrapped when there are several
    ranks) over `batches` (already on the device, this rank's share); log every `log_every`, evaluate every
    `eval_every` and at the end. Seconds and tokens/s leave evaluation time out; tokens count every rank's.
    `stop`, asked after every step, ends the run with KeyboardInterrupt when it says so; `on_eval` returning
    True ends it after that evaluation (early stopping). A resumed run starts after `start.step` (model,
    optimizer, schedule, RNGs and `batches` already where they were then); `on_checkpoint` gets the state every
    `checkpoint_every` steps and at the end."""
    import torch
    from tqdm.auto import tqdm

    step_loss.train()
    state = start or TrainingState()
    tokens, padded = state.tokens, state.padded
    loss_value = float("nan")
    began_at = time.perf_counter()
    first_step = eval_seconds = 0.0
    stopped, last = state.stopped, state.step

    def now(step: int, seconds: float) -> TrainingState:
        return TrainingState(step, step * grad_accum, tokens, padded, state.seconds + seconds, stopped)

    shown = progress and ranks.main
    bar = tqdm(total=steps, initial=last, desc="train", unit="step", disable=None if shown else True, leave=False)
    for step in range(state.step + 1, 1 if stopped else steps + 1):
        for micro in range(grad_accum):
            batch = next(batches)
            tokens += int(batch.pop("real_tokens"))
            padded += batch["input_ids"].numel()
            # DDP: gradients are averaged over the ranks once per step, on the last micro-batch
            last = micro == grad_accum - 1
            with nullcontext() if last or ranks.world == 1 else step_loss.no_sync():
                with autocast:
                    loss = step_loss(**batch)
                (loss / grad_accum).backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(step_loss.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        if stop is not None and stop():
            raise KeyboardInterrupt(f"stopped at step {step}")
        if step == state.step + 1:
            first_step = time.perf_counter() - began_at
        if step % log_every == 0 or step == steps:  # reading the loss waits for the device: only here
            loss_value = distributed.mean(float(loss.detach()), ranks, device)
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at step {step}; lower lr or check the data")
            rate = scheduler.get_last_lr()[0]
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{rate:.2e}")
            seconds = time.perf_counter() - began_at - eval_seconds
            on_log(step, loss_value, rate, (tokens - state.tokens) * ranks.world / seconds)
        if eval_every and step % eval_every == 0 and step != steps:
            began = time.perf_counter()
            stopped = bool(on_eval(step))
            step_loss.train()
            eval_seconds += time.perf_counter() - began
        last = step
        if stopped:
            break
        if on_checkpoint is not None and checkpoint_every and step % checkpoint_every == 0 and step != steps:
            on_checkpoint(now(step, time.perf_counter() - began_at - eval_seconds))
    bar.close()
    if device_sync is not None:
        device_sync()
    seconds = time.perf_counter() - began_at - eval_seconds
    ended = now(last, seconds)
    counts = distributed.gather((tokens, padded), ranks)
    tokens, padded = sum(t for t, _ in counts), sum(p for _, p in counts)
    if last > state.step:  # a run resumed from its end checkpoint has nothing left to do
        if not stopped:
            on_eval(last)
        if on_checkpoint is not None and checkpoint_every:
            on_checkpoint(ended)
    return FitResult(last, tokens, padded, ended.seconds, first_step, loss_value)


def evaluate_classifier(
    model: torch.nn.Module,
    enc: Encoded,
    batch_size: int,
    pad_id: int,
    device: str,
    autocast,
    progress: bool = True,
) -> Evaluation:
    """Argmax of the classification head over the eval set (batched by length), with its mean loss."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    model.eval()
    order = np.argsort(-enc.lengths, kind="stable")
    preds = np.empty(len(enc), dtype=np.int64)
    total = 0.0
    with torch.no_grad():
        for start in tqdm(range(0, len(enc), batch_size), desc="eval", disable=None if progress else True, leave=False):
            rows = order[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate(enc, rows, pad_id, lm_labels=False).items()}
            with autocast:
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logits = logits.float()
            total += float(F.cross_entropy(logits, batch["labels"], reduction="sum"))
            preds[rows] = logits.argmax(-1).cpu().numpy()
    return Evaluation(y_true=enc.labels, y_pred=preds, loss=total / max(1, len(enc)), count=len(enc))


def evaluate_label_words(
    model: torch.nn.Module,
    enc: Encoded,
    answers: list[list[int]],
    batch_size: int,
    pad_id: int,
    device: str,
    autocast,
    progress: bool = True,
) -> Evaluation:
    """Score each class's label word after the prompt; predict the likeliest. The loss is that of the prompt
    followed by the true label word, per token."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    model.eval()
    head = model.get_output_embeddings()
    order = np.argsort(-enc.lengths, kind="stable")
    scores = np.zeros((len(enc), len(answers)))
    nll = 0.0
    n_tokens = 0
    with torch.no_grad():
        for start in tqdm(range(0, len(enc), batch_size), desc="eval", disable=None if progress else True, leave=False):
            rows = order[start : start + batch_size]
            for c, answer in enumerate(answers):
                seqs = [np.concatenate([enc.row(int(i)), answer]) for i in rows]
                candidate = Encoded.from_rows([s.tolist() for s in seqs], enc.labels[rows])
                batch = collate(candidate, np.arange(len(rows)), pad_id, lm_labels=True)
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast:
                    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
                lengths = batch["attention_mask"].sum(1)
                for j in range(len(rows)):
                    n = int(lengths[j])
                    logp = F.log_softmax(head(hidden[j, : n - 1]).float(), dim=-1)
                    picked = logp.gather(1, batch["input_ids"][j, 1:n, None]).squeeze(1)
                    scores[rows[j], c] = float(picked[-len(answer) :].sum())
                    if enc.labels[rows[j]] == c:
                        nll -= float(picked.sum())
                        n_tokens += n - 1
    return Evaluation(y_true=enc.labels, y_pred=scores.argmax(1), loss=nll / max(1, n_tokens), count=n_tokens)
