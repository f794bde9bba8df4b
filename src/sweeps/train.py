"""The recipe, top to bottom: check the config, load data, tokenizer and model, train, evaluate, track.

python -m sweeps train model=gpt2 lr=2e-5
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sweeps import compute, dataset, deploy, model, optimizer, tokenizer, tracking
from sweeps.config import OBJECTIVES
from sweeps.errors import ConfigError

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
    """One fine-tuning run; returns `cfg.objective` on the eval set (the value a sweeper optimises)."""
    preflight(cfg)  # before the heavy imports: a typo costs no more than a second
    import mlflow
    import torch
    from transformers import set_seed

    from sweeps import metrics as scoring
    from sweeps.loop import evaluate_classifier, evaluate_label_words, fit
    from sweeps.tokens import encode, label_word_ids, packed_batches, prefetch, train_batches

    set_seed(cfg.seed)

    # Data, tokenizer and model: every bad-input error surfaces here, before MLflow hears of the run.
    # Data preparation (reading, selecting, tokenising) is cached, so a sweep's later trials skip it.
    cache = tracking.outputs_dir() / "cache"
    started = time.perf_counter()
    splits = dataset.load_splits(cfg.dataset, cache / "splits")
    prep_seconds = time.perf_counter() - started
    tok = tokenizer.load_tokenizer(cfg.tokenizer)
    device = compute.resolve_device(cfg.compute)
    causal_lm = cfg.model.task == "causal_lm"
    n_classes = len(cfg.dataset.label_names)
    net = model.build_model(cfg.model, list(cfg.dataset.label_names), tok.pad_token_id, len(tok)).to(device)
    started = time.perf_counter()
    max_length, task = cfg.tokenizer.max_length, cfg.model.task
    encodings = encode(splits, tok, tokenizer.identity(tok), max_length, task, cfg.dataset, cache / "tokens")
    prep_seconds += time.perf_counter() - started
    log.info(
        "data: %d train / %d eval examples from %s (fingerprint %s, tokens %s)",
        len(splits.train),
        len(splits.eval),
        splits.source,
        splits.fingerprint,
        "from cache" if encodings.cached else "encoded",
    )

    packed = causal_lm and cfg.packing
    per_step = cfg.batch_size * cfg.grad_accum_steps
    if packed:  # rows of max_length tokens, several documents each
        steps_per_epoch = math.ceil(int(encodings.train.lengths.sum()) / (cfg.tokenizer.max_length * per_step))
    else:
        steps_per_epoch = math.ceil(len(encodings.train) / per_step)
    steps = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * steps_per_epoch
    opt, sched = optimizer.build_optimizer(cfg.optimizer, net, steps, device)
    amp = compute.autocast(cfg.compute, device)
    answers = label_word_ids(tok, list(cfg.dataset.label_names))
    out_dir = _output_dir()
    # Set by the sweeper: where this trial reports its objective, and the file whose presence prunes it.
    progress_file = os.environ.get("SWEEPS_PROGRESS_FILE")
    prune_file = os.environ.get("SWEEPS_PRUNE_FILE")

    def evaluate() -> tuple:
        if causal_lm:
            result = evaluate_label_words(
                net, encodings.eval, answers, cfg.eval_batch_size, tok.pad_token_id, device, amp
            )
        else:
            result = evaluate_classifier(net, encodings.eval, cfg.eval_batch_size, tok.pad_token_id, device, amp)
        values = scoring.scores(result.y_true, result.y_pred, n_classes)
        values["eval_loss"] = result.loss
        values.update(result.extra)
        return result, values

    history: list[dict] = []

    def on_eval(step: int) -> None:
        result, values = evaluate()
        history.append({"step": step, "result": result, "values": values})
        mlflow.log_metrics({f"eval_{k}": v for k, v in values.items()}, step=step)
        log.info("step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
        if progress_file:
            with open(progress_file, "a") as fh:
                fh.write(json.dumps({"step": step, "value": values[cfg.objective]}) + "\n")
        if _pruned(prune_file):
            raise Pruned(step)

    def on_log(step: int, loss: float, rate: float, tokens_per_s: float) -> None:
        mlflow.log_metrics({"loss": loss, "learning_rate": rate, "tokens_per_s": tokens_per_s}, step=step)

    uri = tracking.resolve_uri(cfg.tracking)
    tracking.use(cfg.tracking)
    tags = {
        **tracking.provenance_tags(),
        **tracking.sweep_tags(),
        "seed": str(cfg.seed),
        "dataset.fingerprint": splits.fingerprint,
        "dataset.eval_fingerprint": splits.eval_fingerprint,
        "dataset.source": splits.source,
        "model.task": cfg.model.task,
    }
    run = mlflow.start_run(run_name=tracking.run_name(out_dir.name), tags=tags)
    previous = signal.signal(signal.SIGTERM, _interrupt) if _main_thread() else None
    try:
        tracking.log_config(cfg, _overrides())
        tracking.log_dataset(
            splits.train,
            splits.source,
            f"{cfg.dataset.name or 'files'}-train",
            "training",
            splits.fingerprint,
        )
        tracking.log_dataset(
            splits.eval,
            splits.source,
            f"{cfg.dataset.name or 'files'}-eval",
            "evaluation",
            splits.eval_fingerprint,
        )
        mlflow.log_metrics({"data_prep_seconds": prep_seconds, "train_examples": len(splits.train)})
        if packed:
            batches = packed_batches(
                encodings.train, cfg.tokenizer.max_length, cfg.batch_size, tok.pad_token_id, cfg.seed
            )
        else:
            multiple = 64 if cfg.compute.compile else 1
            batches = train_batches(encodings.train, cfg.batch_size, tok.pad_token_id, causal_lm, cfg.seed, multiple)
        fitted = fit(
            compute.compiled(cfg.compute, net, causal_lm),
            prefetch(batches, device),
            opt,
            sched,
            steps=steps,
            grad_accum=cfg.grad_accum_steps,
            max_grad_norm=cfg.optimizer.max_grad_norm,
            autocast=amp,
            causal_lm=causal_lm,
            on_log=on_log,
            on_eval=on_eval,
            eval_every=cfg.eval_every,
            log_every=cfg.log_every,
            device_sync=torch.cuda.synchronize if device.startswith("cuda") else None,
        )
        final = history[-1]
        values = dict(final["values"])
        values["majority_baseline"] = scoring.majority_baseline(encodings.train.labels, encodings.eval.labels)
        values["train_seconds"] = fitted.seconds
        values["train_tokens_per_s"] = fitted.tokens / fitted.seconds
        values["padding_fraction"] = 1 - fitted.tokens / max(1, fitted.padded_tokens)
        values["first_step_seconds"] = fitted.first_step_seconds
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
        mlflow.set_tag("sweeps.state", "pruned")
        mlflow.end_run("KILLED")
        log.info("pruned by the sweeper at step %d", stop.step)
        return float(history[-1]["values"][cfg.objective])
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM from a launcher that pruned or cancelled the trial
        if _pruned(prune_file):
            mlflow.set_tag("sweeps.state", "pruned")
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    _summary(cfg, values, out_dir, checkpoint if cfg.save_checkpoint else None, uri, run, model_uri)
    return float(values[cfg.objective])


class Pruned(Exception):
    """The sweeper pruned this trial at `step`."""

    def __init__(self, step: int) -> None:
        super().__init__(f"pruned at step {step}")
        self.step = step


def _pruned(prune_file: str | None) -> bool:
    return bool(prune_file) and os.path.exists(prune_file)


def _interrupt(signum, frame) -> None:  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _output_dir() -> Path:
    """The Hydra run dir, or a fresh one under outputs/runs when train() is called directly."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        path = Path(HydraConfig.get().runtime.output_dir)
    else:
        path = tracking.outputs_dir() / "runs" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    path.mkdir(parents=True, exist_ok=True)
    return path


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
