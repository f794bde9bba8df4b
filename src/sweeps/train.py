"""The recipe, top to bottom: check the config, load data, tokenizer and model, train, evaluate, track.

python -m sweeps train model=gpt2 lr=2e-5
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweeps import (
    channel,
    compute,
    dataset,
    deploy,
    distributed,
    early_stopping,
    model,
    optimizer,
    resume,
    run_record,
    tokenizer,
    tracking,
)
from sweeps.checkpoints import Checkpoints, TrainingState
from sweeps.errors import ConfigError
from sweeps.schema import OBJECTIVES
from sweeps.stopping import Pruned, StopSignals

log = logging.getLogger(__name__)


def preflight(cfg: DictConfig) -> None:
    """Every problem visible without loading data, reported at once (torchtune style)."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(*(f"{key} is missing: set {key}=... on the command line or in its config" for key in missing))
    errors = [
        *dataset.problems(cfg.dataset),
        *tokenizer.problems(cfg.tokenizer),
        *model.problems(cfg.model),
        *optimizer.problems(cfg.optimizer),
        *compute.problems(cfg.compute),
        *deploy.problems(cfg.deploy),
    ]
    positive = ("batch_size", "epochs", "eval_batch_size", "grad_accum_steps", "log_every")
    errors += [f"{key}={cfg[key]}: must be >= 1" for key in positive if cfg[key] < 1]
    if cfg.max_steps == 0 or cfg.max_steps < -1:
        errors.append(f"max_steps={cfg.max_steps}: a positive number of steps, or -1 to let epochs decide")
    if cfg.eval_every < 0:
        errors.append(f"eval_every={cfg.eval_every}: steps between evaluations, >= 0 (0: only at the end)")
    if cfg.checkpoint_every < 0:
        errors.append(f"checkpoint_every={cfg.checkpoint_every}: steps between checkpoints, >= 0 (0: none)")
    if cfg.checkpoint_keep < 1:
        errors.append(f"checkpoint_keep={cfg.checkpoint_keep}: checkpoints kept, >= 1")
    errors += early_stopping.problems(cfg.early_stopping, cfg.eval_every)
    if cfg.objective not in OBJECTIVES:
        errors.append(f"objective={cfg.objective}: choose one of {', '.join(OBJECTIVES)}")
    if cfg.model.init == "scratch" and cfg.tokenizer.max_length > cfg.model.max_positions:
        errors.append(
            f"tokenizer.max_length={cfg.tokenizer.max_length}: longer than model.max_positions="
            f"{cfg.model.max_positions}; lower it or raise model.max_positions"
        )
    if not errors:
        errors += tracking.problems(cfg.tracking)
    if errors:
        raise ConfigError(*errors)


def train(cfg: DictConfig) -> float:
    """One fine-tuning run; returns `cfg.objective` on the eval set (the value a sweeper optimises). With
    `compute.processes` > 1, the run's processes are started here; each trains on its share of the batches."""
    preflight(cfg)  # before the heavy imports: a typo costs no more than a second
    if cfg.compute.processes > 1 and distributed.Ranks.from_env().world == 1:
        # bad data, tokenizer or model settings stop the run here, and the ranks find the caches full
        _prepare(cfg, compute.resolve_device(cfg.compute))
        return distributed.launch(_rank, (cfg, run_record.hydra_yaml()), cfg.compute.processes)
    ranks, device = distributed.join(compute.resolve_device(cfg.compute))
    try:
        return _train(cfg, ranks, device)
    finally:
        distributed.leave()


def _rank(cfg: DictConfig, hydra_yaml: str | None) -> float:
    """One of the processes `train` starts: the parent's Hydra job, continued. (Hydra's config travels as YAML:
    its launcher schemas, imported by plugin discovery, do not pickle.)"""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import configure_log

    from sweeps.compose import load_job_config

    if hydra_yaml is not None:
        hydra_config = load_job_config(hydra_yaml)
        HydraConfig.instance().set_config(hydra_config)
        if distributed.Ranks.from_env().main:
            configure_log(hydra_config.hydra.job_logging, hydra_config.hydra.verbose)
    return train(cfg)


def _prepare(cfg: DictConfig, device: str):
    """Tokenizer and data (read, selected, tokenised), from the caches when a run has prepared them before;
    with the seconds data preparation took. Between the two, the model's size and memory are estimated from its
    config: a model that cannot fit the device stops the run before any data is tokenised."""
    from sweeps.tokens import encode

    cache = tracking.outputs_dir() / "cache"
    started = time.perf_counter()
    tok = tokenizer.load_tokenizer(cfg.tokenizer)
    model.check_run(cfg, list(cfg.dataset.label_names), tok.pad_token_id, len(tok), device)
    splits = dataset.load_splits(cfg.dataset, cache / "splits")
    encodings = encode(
        splits, tok, tokenizer.identity(tok), cfg.tokenizer.max_length, cfg.model.task, cfg.dataset, cache / "tokens"
    )
    return splits, tok, encodings, time.perf_counter() - started


def _train(cfg: DictConfig, ranks: distributed.Ranks, device: str) -> float:
    """`train` in this process: the only one, or one rank of several (rank 0 tracks, reports and saves)."""
    from transformers import set_seed

    set_seed(cfg.seed)
    origin = resume.find(cfg)  # the interrupted run this one continues, if any (a bad resume= stops here)
    job = setup(cfg, ranks, device)  # every bad-input error surfaces here, before MLflow hears of the run
    start = resume.restore(job, origin, ranks.main) if origin is not None else None  # the resume phase
    signals = StopSignals(ranks, device)
    run = None
    try:
        if ranks.main:
            run = run_record.start_run(cfg, job.splits, job.prep_seconds, job.out_dir, ranks.world, origin)
            channel.announce_run_dir(job.out_dir)
        with run_record.ending(run, job.out_dir):
            values = fit(cfg, job, ranks, device, signals, start)
            tested, test_values = job.evaluator.evaluate("test")  # once, at the end
            values.update({f"test_{k.removeprefix('eval_')}": v for k, v in test_values.items()})
            if not ranks.main:
                return float(values[cfg.objective])
            saved, model_uri = run_record.record(cfg, values, tested, job.out_dir, job.net, job.tok, job.steps)
    except Pruned as stop:  # the sweeper's decision, read between steps (in-process launchers)
        log.info("pruned by the sweeper at step %d", stop.step)
        return float(job.evaluator.history[-1]["values"][cfg.objective])
    finally:
        signals.restore()
    run_record.summary(cfg, values, job.out_dir, saved, tracking.resolve_uri(cfg.tracking), run, model_uri)
    return float(values[cfg.objective])


@dataclass
class Job:
    """What `setup` builds for `fit`: data, tokenizer, model, optimizer, the step budget and the evaluator."""

    splits: dataset.Splits
    tok: Any
    encodings: Any
    prep_seconds: float
    net: Any
    opt: Any
    sched: Any
    steps: int
    amp: Any
    evaluator: Evaluator
    out_dir: Path | None


def setup(cfg: DictConfig, ranks: distributed.Ranks, device: str) -> Job:
    """Data, tokenizer and model, the optimizer and schedule for the run's steps, and its evaluator. Data
    preparation (reading, selecting, tokenising) is cached, so a sweep's later trials skip it; each machine's
    first process fills the caches before its others read them."""
    with distributed.local_first(ranks):
        splits, tok, encodings, prep_seconds = _prepare(cfg, device)
    net = model.build_model(cfg.model, list(cfg.dataset.label_names), tok.pad_token_id, len(tok), device=device)
    net = net.to(device)
    log.info(
        "data: %d train / %d validation / %d test examples from %s (fingerprint %s, tokens %s)%s",
        len(splits.train),
        len(splits.validation),
        len(splits.test),
        splits.source,
        splits.fingerprint,
        "from cache" if encodings.cached else "encoded",
        f"; {ranks.world} processes" if ranks.world > 1 else "",
    )
    per_step = cfg.batch_size * cfg.grad_accum_steps * ranks.world
    if cfg.model.task == "causal_lm" and cfg.packing:  # rows of max_length tokens, several documents each
        steps_per_epoch = math.ceil(int(encodings.train.lengths.sum()) / (cfg.tokenizer.max_length * per_step))
    else:
        steps_per_epoch = math.ceil(len(encodings.train) / per_step)
    steps = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * steps_per_epoch
    opt, sched = optimizer.build_optimizer(cfg.optimizer, net, steps, device)
    amp = compute.autocast(cfg.compute, device)
    evaluator = Evaluator(cfg, net, tok, encodings, ranks, device, amp)
    out_dir = evaluator.out_dir = run_record.output_dir() if ranks.main else None
    return Job(splits, tok, encodings, prep_seconds, net, opt, sched, steps, amp, evaluator, out_dir)


def fit(
    cfg: DictConfig,
    job: Job,
    ranks: distributed.Ranks,
    device: str,
    signals: StopSignals,
    start: TrainingState | None = None,
) -> dict[str, float]:
    """Train for the job's steps (from `start`'s when resuming), validating every `eval_every` and writing the
    training state every `checkpoint_every`; the final validation metrics (the objective; with early stopping,
    the best evaluation's, whose weights the model then has) with the run's throughput."""
    import torch

    from sweeps import metrics as scoring
    from sweeps.loop import fit as fit_loop
    from sweeps.loop import training_step
    from sweeps.tokens import packed_batches, prefetch, train_batches

    causal_lm = cfg.model.task == "causal_lm"
    shares, skip = (ranks.rank, ranks.world), start.batches if start is not None else 0
    train = job.encodings.train
    if causal_lm and cfg.packing:
        batches = packed_batches(
            train, cfg.tokenizer.max_length, cfg.batch_size, job.tok.pad_token_id, cfg.seed, shares, skip
        )
    else:
        multiple = 64 if cfg.compute.compile else 1
        pad = job.tok.pad_token_id
        batches = train_batches(train, cfg.batch_size, pad, causal_lm, cfg.seed, multiple, shares, skip)
    step_loss = distributed.parallel(
        training_step(compute.compiled(cfg.compute, job.net, causal_lm), causal_lm), ranks, device
    )

    def on_log(step: int, loss: float, rate: float, tokens_per_s: float) -> None:
        if ranks.main:
            run_record.log_metrics({"loss": loss, "learning_rate": rate, "tokens_per_s": tokens_per_s}, step)

    fitted = fit_loop(
        step_loss,
        prefetch(batches, device),
        job.opt,
        job.sched,
        steps=job.steps,
        grad_accum=cfg.grad_accum_steps,
        max_grad_norm=cfg.optimizer.max_grad_norm,
        autocast=job.amp,
        on_log=on_log,
        on_eval=job.evaluator.on_eval,
        eval_every=cfg.eval_every,
        log_every=cfg.log_every,
        device_sync=torch.cuda.synchronize if device.startswith("cuda") else None,
        ranks=ranks,
        device=device,
        stop=signals.stopped,
        start=start,
        checkpoint_every=cfg.checkpoint_every,
        on_checkpoint=resume.saver(cfg, job, ranks.main),
    )
    values = dict(job.evaluator.final(fitted.steps)["values"])
    values["majority_baseline"] = scoring.majority_baseline(train.labels, job.encodings.test.labels)
    values["train_seconds"] = fitted.seconds
    values["train_tokens_per_s"] = fitted.tokens / fitted.seconds
    values["padding_fraction"] = 1 - fitted.tokens / max(1, fitted.padded_tokens)
    values["first_step_seconds"] = fitted.first_step_seconds
    return values


class Evaluator:
    """Scores a split (this rank's shard, gathered from all): the validation split at every eval step, where it
    logs the metrics, reports the objective to the sweeper, stops the run when the sweeper pruned it and keeps
    early stopping's count (and the best weights); the test split once at the end."""

    def __init__(self, cfg: DictConfig, net, tok, encodings, ranks: distributed.Ranks, device: str, amp) -> None:
        import numpy as np

        from sweeps.tokens import label_word_ids

        self.cfg, self.net, self.tok, self.ranks, self.device, self.amp = cfg, net, tok, ranks, device, amp
        self.causal_lm = cfg.model.task == "causal_lm"
        self.answers = label_word_ids(tok, list(cfg.dataset.label_names))
        self.shards = {}  # split -> (this rank's rows, their encodings)
        for split in ("validation", "test"):
            encoded = getattr(encodings, split)
            rows = np.arange(ranks.rank, len(encoded), ranks.world)
            self.shards[split] = (rows, encoded if ranks.world == 1 else encoded.subset(rows))
        self.history: list[dict] = []
        self.stopping = early_stopping.EarlyStopping.from_config(cfg.early_stopping, cfg.objective)
        self.best_weights: dict | None = None  # with early stopping: the best evaluation's, on the CPU
        self.out_dir: Path | None = None  # rank 0's run dir, where checkpoints/best-<step> goes

    def resume(self, state: TrainingState, run_dir: Path) -> None:
        """Continue from a checkpoint: its evaluations (reported to the sweeper again), early stopping's count and
        best weights."""
        self.history = list(state.history)
        self.stopping.restore(state.early_stopping)
        if self.stopping.active and self.stopping.best_step is not None:
            best = Checkpoints(run_dir).best()
            self.best_weights = best.model if best is not None else None
        for entry in self.history if self.ranks.main else ():
            channel.report(entry["step"], entry["values"][self.cfg.objective])

    def final(self, step: int) -> dict:
        """The evaluation the run ends with: the last, or with early stopping the best (whose weights the model
        is given back; the run's tags say so)."""
        if not self.stopping.active or self.best_weights is None:
            return self.history[-1]
        self.net.load_state_dict(self.best_weights)
        best = next(e for e in self.history if e["step"] == self.stopping.best_step)
        if self.ranks.main:
            import mlflow

            stopped = self.stopping.exhausted
            mlflow.set_tags(
                {
                    "sweeps.early_stopped": str(stopped).lower(),
                    "sweeps.stopped_at_step": str(step),
                    "sweeps.best_step": str(best["step"]),
                    "sweeps.final_metrics": f"the best evaluation's (step {best['step']}), its model logged",
                }
            )
        return best

    def evaluate(self, split: str = "validation") -> tuple[Any, dict[str, float]]:
        from sweeps import metrics as scoring
        from sweeps.loop import Evaluation, evaluate_classifier, evaluate_label_words

        cfg, pad = self.cfg, self.tok.pad_token_id
        rows, evals = self.shards[split]
        if self.causal_lm:
            result = evaluate_label_words(
                self.net, evals, self.answers, cfg.eval_batch_size, pad, self.device, self.amp
            )
        else:
            result = evaluate_classifier(self.net, evals, cfg.eval_batch_size, pad, self.device, self.amp)
        result = Evaluation.merge(distributed.gather((rows, result), self.ranks))
        values = scoring.scores(result.y_true, result.y_pred, len(cfg.dataset.label_names))
        values["eval_loss"] = result.loss
        if self.causal_lm:
            values["perplexity"] = float(math.exp(min(result.loss, 50)))
        return result, values

    def on_eval(self, step: int) -> bool:
        """Score the validation split at `step`; True when early stopping ends the run here."""
        result, values = self.evaluate()
        self.history.append({"step": step, "result": result, "values": values})
        if self.stopping.active and self.stopping.update(step, values[self.cfg.objective]):
            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}
            if self.ranks.main and self.out_dir is not None:
                meta = {"values": values}
                Checkpoints(self.out_dir).save_best(step, self.best_weights, meta)
        if self.ranks.main:
            run_record.log_metrics({k if k.startswith("eval_") else f"eval_{k}": v for k, v in values.items()}, step)
            log.info("step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
            channel.report(step, values[self.cfg.objective])  # for the sweeper, which may prune the trial
        if distributed.from_main(channel.pruned(), self.ranks):
            raise Pruned(step)
        return self.stopping.exhausted


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit("run it as: python -m sweeps train [overrides]")
