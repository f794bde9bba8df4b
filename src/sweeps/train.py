"""The recipe, top to bottom: check the config, load data, tokenizer and model, train, evaluate, track.

python -m sweeps train model=gpt2 lr=2e-5
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sweeps import channel, compute, dataset, deploy, distributed, model, optimizer, tokenizer, tracking
from sweeps.errors import ConfigError
from sweeps.schema import OBJECTIVES

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
    if cfg.objective not in OBJECTIVES:
        errors.append(f"objective={cfg.objective}: choose one of {', '.join(OBJECTIVES)}")
    if cfg.model.init == "scratch" and cfg.tokenizer.max_length > cfg.model.n_positions:
        errors.append(
            f"tokenizer.max_length={cfg.tokenizer.max_length}: longer than model.n_positions="
            f"{cfg.model.n_positions}; lower it or raise model.n_positions"
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
        compute.resolve_device(cfg.compute)
        _prepare(cfg)  # bad data or tokenizer settings stop the run here, and the ranks find the caches full
        return distributed.launch(_rank, (cfg, _hydra_config()), cfg.compute.processes)
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


def _prepare(cfg: DictConfig):
    """Data (read, selected, tokenised) and tokenizer, from the caches when a run has prepared them before;
    with the seconds data preparation took."""
    from sweeps.tokens import encode

    cache = tracking.outputs_dir() / "cache"
    started = time.perf_counter()
    splits = dataset.load_splits(cfg.dataset, cache / "splits")
    tok = tokenizer.load_tokenizer(cfg.tokenizer)
    encodings = encode(
        splits, tok, tokenizer.identity(tok), cfg.tokenizer.max_length, cfg.model.task, cfg.dataset, cache / "tokens"
    )
    return splits, tok, encodings, time.perf_counter() - started


def _train(cfg: DictConfig, ranks: distributed.Ranks, device: str) -> float:
    """`train` in this process: the only one, or one rank of several (rank 0 tracks, reports and saves)."""
    import mlflow
    import numpy as np
    import torch
    from transformers import set_seed

    from sweeps import metrics as scoring
    from sweeps.loop import Evaluation, evaluate_classifier, evaluate_label_words, fit, training_step
    from sweeps.tokens import label_word_ids, packed_batches, prefetch, train_batches

    set_seed(cfg.seed)

    # Data, tokenizer and model: every bad-input error surfaces here, before MLflow hears of the run.
    # Data preparation (reading, selecting, tokenising) is cached, so a sweep's later trials skip it;
    # each machine's first process fills the caches before its others read them.
    with distributed.local_first(ranks):
        splits, tok, encodings, prep_seconds = _prepare(cfg)
    causal_lm = cfg.model.task == "causal_lm"
    n_classes = len(cfg.dataset.label_names)
    net = model.build_model(cfg.model, list(cfg.dataset.label_names), tok.pad_token_id, len(tok)).to(device)
    log.info(
        "data: %d train / %d eval examples from %s (fingerprint %s, tokens %s)%s",
        len(splits.train),
        len(splits.eval),
        splits.source,
        splits.fingerprint,
        "from cache" if encodings.cached else "encoded",
        f"; {ranks.world} processes" if ranks.world > 1 else "",
    )

    packed = causal_lm and cfg.packing
    per_step = cfg.batch_size * cfg.grad_accum_steps * ranks.world
    if packed:  # rows of max_length tokens, several documents each
        steps_per_epoch = math.ceil(int(encodings.train.lengths.sum()) / (cfg.tokenizer.max_length * per_step))
    else:
        steps_per_epoch = math.ceil(len(encodings.train) / per_step)
    steps = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * steps_per_epoch
    opt, sched = optimizer.build_optimizer(cfg.optimizer, net, steps, device)
    amp = compute.autocast(cfg.compute, device)
    answers = label_word_ids(tok, list(cfg.dataset.label_names))
    out_dir = _output_dir() if ranks.main else None
    shard = np.arange(ranks.rank, len(encodings.eval), ranks.world)  # this rank's eval examples
    evals = encodings.eval if ranks.world == 1 else encodings.eval.subset(shard)

    def evaluate() -> tuple:
        if causal_lm:
            result = evaluate_label_words(net, evals, answers, cfg.eval_batch_size, tok.pad_token_id, device, amp)
        else:
            result = evaluate_classifier(net, evals, cfg.eval_batch_size, tok.pad_token_id, device, amp)
        result = Evaluation.merge(distributed.gather((shard, result), ranks))
        values = scoring.scores(result.y_true, result.y_pred, n_classes)
        values["eval_loss"] = result.loss
        if causal_lm:
            values["perplexity"] = float(math.exp(min(result.loss, 50)))
        return result, values

    history: list[dict] = []

    def on_eval(step: int) -> None:
        result, values = evaluate()
        history.append({"step": step, "result": result, "values": values})
        if ranks.main:
            mlflow.log_metrics({f"eval_{k}": v for k, v in values.items()}, step=step)
            log.info("step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
            channel.report(step, values[cfg.objective])  # for the sweeper, which may prune the trial
        if distributed.from_main(channel.pruned(), ranks):
            raise Pruned(step)

    def on_log(step: int, loss: float, rate: float, tokens_per_s: float) -> None:
        if ranks.main:
            mlflow.log_metrics({"loss": loss, "learning_rate": rate, "tokens_per_s": tokens_per_s}, step=step)

    signals = _StopSignals(ranks, device)
    run = None
    try:
        run = _start_run(cfg, splits, prep_seconds, out_dir, ranks.world) if ranks.main else None
        shares = (ranks.rank, ranks.world)
        if packed:
            batches = packed_batches(
                encodings.train, cfg.tokenizer.max_length, cfg.batch_size, tok.pad_token_id, cfg.seed, shares
            )
        else:
            multiple = 64 if cfg.compute.compile else 1
            batches = train_batches(
                encodings.train, cfg.batch_size, tok.pad_token_id, causal_lm, cfg.seed, multiple, shares
            )
        step_loss = distributed.parallel(
            training_step(compute.compiled(cfg.compute, net, causal_lm), causal_lm), ranks, device
        )
        fitted = fit(
            step_loss,
            prefetch(batches, device),
            opt,
            sched,
            steps=steps,
            grad_accum=cfg.grad_accum_steps,
            max_grad_norm=cfg.optimizer.max_grad_norm,
            autocast=amp,
            on_log=on_log,
            on_eval=on_eval,
            eval_every=cfg.eval_every,
            log_every=cfg.log_every,
            device_sync=torch.cuda.synchronize if device.startswith("cuda") else None,
            ranks=ranks,
            device=device,
            stop=signals.stopped,
        )
        final = history[-1]
        values = dict(final["values"])
        values["majority_baseline"] = scoring.majority_baseline(encodings.train.labels, encodings.eval.labels)
        values["train_seconds"] = fitted.seconds
        values["train_tokens_per_s"] = fitted.tokens / fitted.seconds
        values["padding_fraction"] = 1 - fitted.tokens / max(1, fitted.padded_tokens)
        values["first_step_seconds"] = fitted.first_step_seconds
        if not ranks.main:
            return float(values[cfg.objective])
        mlflow.log_metrics(values, step=steps)
        (out_dir / "metrics.json").write_text(json.dumps(values, indent=2))
        mlflow.log_artifact(str(out_dir / "metrics.json"))
        png = scoring.confusion_png(
            final["result"].y_true,
            final["result"].y_pred,
            list(cfg.dataset.label_names),
            out_dir / "confusion_matrix.png",
        )
        mlflow.log_artifact(str(png))
        checkpoint = out_dir / "checkpoint"
        if cfg.save_checkpoint:
            net.save_pretrained(checkpoint)
            tok.save_pretrained(checkpoint)
        model_uri = tracking.log_model(net, tok, cfg.model.task) if cfg.tracking.log_model else None
        if model_uri:
            mlflow.set_tag("model_uri", model_uri)
        mlflow.end_run()
    except Pruned as stop:  # the sweeper's decision, read between steps (in-process launchers)
        if run is not None:
            mlflow.set_tag("sweeps.state", "pruned")
            mlflow.end_run("KILLED")
        log.info("pruned by the sweeper at step %d", stop.step)
        return float(history[-1]["values"][cfg.objective])
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM from a launcher that pruned or cancelled the trial
        if run is not None:
            if channel.pruned():
                mlflow.set_tag("sweeps.state", "pruned")
            mlflow.end_run("KILLED")
        raise
    except BaseException:
        if run is not None:
            mlflow.end_run("FAILED")
        raise
    finally:
        signals.restore()
    saved = checkpoint if cfg.save_checkpoint else None
    _summary(cfg, values, out_dir, saved, tracking.resolve_uri(cfg.tracking), run, model_uri)
    return float(values[cfg.objective])


def _start_run(cfg: DictConfig, splits, prep_seconds: float, out_dir: Path, world: int):
    """The run's MLflow run, started with its tags, config, datasets and data-preparation time."""
    import mlflow

    tracking.use(cfg.tracking)
    tags = {
        **tracking.provenance_tags(),
        **channel.sweep_tags(),
        "seed": str(cfg.seed),
        "dataset.fingerprint": splits.fingerprint,
        "dataset.eval_fingerprint": splits.eval_fingerprint,
        "dataset.source": splits.source,
        "model.task": cfg.model.task,
        "processes": str(world),  # data-parallel processes that trained the run
    }
    run = mlflow.start_run(run_name=channel.run_name(out_dir.name), tags=tags)
    try:
        tracking.log_config(cfg, _overrides())
        name = cfg.dataset.name or "files"
        tracking.log_dataset(splits.train, splits.source, f"{name}-train", "training", splits.fingerprint)
        tracking.log_dataset(splits.eval, splits.source, f"{name}-eval", "evaluation", splits.eval_fingerprint)
        mlflow.log_metrics({"data_prep_seconds": prep_seconds, "train_examples": len(splits.train)})
    except BaseException as exc:
        mlflow.end_run("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    return run


class Pruned(Exception):
    """The sweeper pruned this trial at `step`."""

    def __init__(self, step: int) -> None:
        super().__init__(f"pruned at step {step}")
        self.step = step


class _StopSignals:
    """SIGTERM (a launcher pruning or cancelling the trial) stops the run as Ctrl-C does. One process stops at
    once (KeyboardInterrupt); several ranks stop together at the next step (SIGINT too), so that none is left
    waiting in a collective for a rank that has gone."""

    def __init__(self, ranks: distributed.Ranks, device: str) -> None:
        self.ranks, self.device = ranks, device
        self.received: int | None = None
        self.previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT) if ranks.world > 1 else (signal.SIGTERM,):
                self.previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.ranks.world == 1:
            raise KeyboardInterrupt(f"signal {signum}")
        self.received = signum

    def stopped(self) -> bool:
        """Whether any rank received a stop signal (every rank calls it at the same step)."""
        return self.ranks.world > 1 and distributed.any_rank(self.received is not None, self.ranks, self.device)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _output_dir() -> Path:
    """The Hydra run dir, or a fresh one under outputs/runs when train() is called directly."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        path = Path(HydraConfig.get().runtime.output_dir)
    else:
        path = tracking.outputs_dir() / "runs" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _hydra_config() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    return OmegaConf.to_yaml(HydraConfig.instance().cfg) if HydraConfig.initialized() else None


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _summary(cfg, values: dict, out_dir: Path, checkpoint: Path | None, uri: str, run, model_uri) -> None:
    """A short table of the run's metrics and where its artifacts are."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {run.info.run_id[:8]} · {cfg.model.name} ({cfg.model.init}, {cfg.model.task})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (
        "accuracy",
        "precision",
        "recall",
        "f1",
        "eval_loss",
        "perplexity",
        "majority_baseline",
        "train_tokens_per_s",
        "train_seconds",
    ):
        if key in values:
            table.add_row(key, f"{values[key]:.4f}" if abs(values[key]) < 1000 else f"{values[key]:,.0f}")
    console = Console(stderr=False)
    console.print(table)
    console.print(f"run dir     {out_dir}")
    if checkpoint:
        console.print(f"checkpoint  {checkpoint}")
    console.print(f"mlflow      {uri}  run {run.info.run_id}" + (f"  model {model_uri}" if model_uri else ""))
    console.print("browse      python -m sweeps ui")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit("run it as: python -m sweeps train [overrides]")
