"""What a run leaves behind: its MLflow run (started with tags, config and datasets, or an interrupted run's
continued; ended with the status that says how it ended), its metrics, confusion matrix, checkpoint and logged
model, and the summary it prints."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from sweeps import channel, tracking
from sweeps.checkpoints import Checkpoints
from sweeps.stopping import Pruned

if TYPE_CHECKING:
    from sweeps.dataset import Splits
    from sweeps.resume import Origin

# The metrics the summary table shows, in order.
SUMMARY = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "eval_loss",
    "perplexity",
    "test_accuracy",
    "test_precision",
    "test_recall",
    "test_f1",
    "test_loss",
    "majority_baseline",
    "train_tokens_per_s",
    "train_seconds",
)


# metric -> the last step an interrupted run logged it at: a continued run logs only later steps
_logged: dict[str, int] = {}


def start_run(cfg: DictConfig, splits: Splits, prep_seconds: float, out_dir: Path, world: int, origin: Origin | None):
    """The run's MLflow run, started with its tags, config, datasets and data-preparation time; or, resuming,
    the interrupted run's continued (status RUNNING again, `sweeps.resumed` counting the resumes)."""
    import mlflow

    tracking.use(cfg.tracking)
    _logged.clear()
    if origin is not None and origin.run_id is not None:
        run = _continue(origin, out_dir)
        if run is not None:
            return run
    tags = {
        **tracking.provenance_tags(),
        **channel.sweep_tags(),
        "seed": str(cfg.seed),
        "dataset.fingerprint": splits.fingerprint,
        "dataset.validation_fingerprint": splits.validation_fingerprint,
        "dataset.test_fingerprint": splits.test_fingerprint,
        "dataset.source": splits.source,
        "model.task": cfg.model.task,
        "processes": str(world),  # data-parallel processes that trained the run
        "sweeps.run_dir": str(out_dir),  # where its checkpoints are: resume=<run id> finds them
    }
    run = mlflow.start_run(run_name=channel.run_name(out_dir.name), tags=tags)
    channel.report_run(run.info.run_id)
    try:
        tracking.log_config(cfg, overrides())
        name = cfg.dataset.name or "files"
        tracking.log_dataset(splits.train, splits.source, f"{name}-train", "training", splits.fingerprint)
        tracking.log_dataset(
            splits.validation, splits.source, f"{name}-validation", "validation", splits.validation_fingerprint
        )
        tracking.log_dataset(splits.test, splits.source, f"{name}-test", "test", splits.test_fingerprint)
        mlflow.log_metrics({"data_prep_seconds": prep_seconds, "train_examples": len(splits.train)})
    except BaseException as exc:
        mlflow.end_run("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    return run


def _continue(origin: Origin, out_dir: Path):
    """The interrupted MLflow run, active again; None when the store no longer has it."""
    import mlflow

    from sweeps.resume import logged_steps

    try:
        previous = mlflow.MlflowClient().get_run(origin.run_id)
    except mlflow.exceptions.MlflowException:
        return None
    run = mlflow.start_run(run_id=origin.run_id)
    resumes = int(previous.data.tags.get("sweeps.resumed", "0")) + 1
    tags = {"sweeps.resumed": str(resumes), "sweeps.resumed_from_step": str(origin.step), **channel.sweep_tags()}
    mlflow.set_tags({**tags, "mlflow.runName": channel.run_name(out_dir.name), "sweeps.run_dir": str(out_dir)})
    _logged.update(logged_steps(origin.run_id))
    return run


def log_metrics(values: dict[str, float], step: int) -> None:
    """Log metrics at `step`, but those a continued run's interrupted attempt already logged there."""
    import mlflow

    fresh = {k: v for k, v in values.items() if step > _logged.get(k, -1)}
    if fresh:
        mlflow.log_metrics(fresh, step=step)


@contextmanager
def ending(run, out_dir: Path | None = None) -> Iterator[None]:
    """Ends `run` (None on ranks that do not track) with the status of how the block ended: a pruned trial is
    KILLED and tagged pruned, Ctrl-C or SIGTERM is KILLED (tagged pruned when the sweeper asked for it), any
    other error FAILED. A block that returns leaves the run open for `record`."""
    import mlflow

    try:
        yield
    except Pruned:
        if run is not None:
            mlflow.set_tag("sweeps.state", "pruned")
            mlflow.end_run("KILLED")
            if out_dir is not None:
                Checkpoints(out_dir).mark_finished({"mlflow_run_id": run.info.run_id, "state": "pruned"})
        raise
    except KeyboardInterrupt:
        if run is not None:
            if channel.pruned():
                mlflow.set_tag("sweeps.state", "pruned")
            mlflow.end_run("KILLED")
        raise
    except BaseException:
        if run is not None:
            mlflow.end_run("FAILED")
        raise


def record(cfg: DictConfig, values: dict[str, float], final, out_dir: Path, net, tok, steps: int):
    """The final metrics, metrics.json, the test split's confusion matrix, the checkpoint and the logged model;
    then the run ends FINISHED. Returns the checkpoint folder (None without save_checkpoint) and the model URI."""
    import json

    import mlflow

    from sweeps import metrics as scoring

    (out_dir / "metrics.json").write_text(json.dumps(values, indent=2))
    mlflow.log_artifact(str(out_dir / "metrics.json"))
    png = scoring.confusion_png(
        final.y_true, final.y_pred, list(cfg.dataset.label_names), out_dir / "confusion_matrix.png"
    )
    mlflow.log_artifact(str(png))
    checkpoint = out_dir / "checkpoint" if cfg.save_checkpoint else None
    if checkpoint is not None:
        net.save_pretrained(checkpoint)
        tok.save_pretrained(checkpoint)
    model_uri = model_id = None
    if cfg.tracking.log_model:
        model_uri, model_id = tracking.log_model(net, tok, cfg.model.task, cfg.tokenizer.max_length)
        mlflow.set_tag("model_uri", model_uri)
    mlflow.log_metrics(values, step=steps, model_id=model_id)  # the run's, and its LoggedModel's
    run_id = mlflow.active_run().info.run_id
    mlflow.end_run()
    Checkpoints(out_dir).mark_finished({"mlflow_run_id": run_id, "state": "finished"})
    return checkpoint, model_uri


def summary(cfg, values: dict, out_dir: Path, checkpoint: Path | None, uri: str, run, model_uri) -> None:
    """A short table of the run's metrics and where its artifacts are."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {run.info.run_id[:8]} · {cfg.model.name} ({cfg.model.init}, {cfg.model.task})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in SUMMARY:
        if key in values:
            table.add_row(key, f"{values[key]:.4f}" if abs(values[key]) < 1000 else f"{values[key]:,.0f}")
    console = Console(stderr=False)
    console.print(table)
    console.print(f"run dir     {out_dir}")
    if checkpoint:
        console.print(f"checkpoint  {checkpoint}")
    console.print(f"mlflow      {uri}  run {run.info.run_id}" + (f"  model {model_uri}" if model_uri else ""))
    console.print("browse      python -m sweeps ui")


def output_dir() -> Path:
    """The Hydra run dir, or a fresh one under outputs/runs when train() is called directly."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        path = Path(HydraConfig.get().runtime.output_dir)
    else:
        path = tracking.outputs_dir() / "runs" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    path.mkdir(parents=True, exist_ok=True)
    return path


def overrides() -> list[str]:
    """The command line's overrides of this Hydra job (none outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def hydra_yaml() -> Any:
    """This Hydra job's whole config as YAML, for the processes it starts (None outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(HydraConfig.instance().cfg) if HydraConfig.initialized() else None
