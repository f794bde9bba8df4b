"""Which interrupted run a run continues (`resume=`), whether its checkpoint may be continued with this config,
and the hooks that write a run's checkpoints and put a run back where its checkpoint was.

`resume=auto` looks at the run dirs under outputs/runs (and beside this run's Hydra dir) for the newest one that
has a checkpoint, has not ended (no checkpoints/finished) and was trained with the same training config; none
found, the run starts from step 0. `resume=<run dir>` or `resume=<MLflow run id>` (its `sweeps.run_dir` tag names
the dir) continues that run, or refuses: a run that ended, one without a usable checkpoint, or one whose training
config differs (the message names the keys). A sweep's trial run again after an interruption is given its old run
dir through sweeps.channel; there a missing checkpoint means a start from step 0.

The training config is the resolved config less what does not change the weights: tracking.*, registry.*,
deploy.*, resume, checkpoint_every, checkpoint_keep, log_every, eval_every, eval_batch_size, save_checkpoint.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sweeps import channel, tracking
from sweeps.checkpoints import Checkpoints, Loaded, TrainingState
from sweeps.errors import ConfigError

log = logging.getLogger(__name__)

IGNORED_GROUPS = ("tracking.", "registry.", "deploy.")
IGNORED = ("resume", "checkpoint_every", "checkpoint_keep", "log_every", "eval_every", "eval_batch_size")
IGNORED += ("save_checkpoint",)
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
RUN_DIR_TAG = "sweeps.run_dir"


@dataclass
class Origin:
    """The interrupted run a run continues: its dir, its last usable checkpoint, its MLflow run."""

    run_dir: Path
    checkpoint: Loaded

    @property
    def step(self) -> int:
        return self.checkpoint.step

    @property
    def run_id(self) -> str | None:
        return self.checkpoint.manifest.get("mlflow_run_id")


def training_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config's keys that change training (secrets masked), flattened."""
    flat = tracking.flatten(cfg)
    return {k: v for k, v in flat.items() if not k.startswith(IGNORED_GROUPS) and k not in IGNORED}


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`key=saved (now current)` for every key whose value differs."""
    keys = sorted(set(saved) | set(current))
    missing = object()
    found = []
    for key in keys:
        old, new = saved.get(key, missing), current.get(key, missing)
        if old != new:
            show = ["(none)" if v is missing else v for v in (old, new)]
            found.append(f"{key}={show[0]} (now {show[1]})")
    return found


def requested(cfg: DictConfig) -> tuple[str | None, bool]:
    """What to resume: the trial channel's run dir (a sweep's rerun trial) first, else `resume`; and whether it
    came from the channel."""
    given = channel.resume_dir()
    if given:
        return given, True
    return (str(cfg.resume) if cfg.resume else None), False


def find(cfg: DictConfig) -> Origin | None:
    """The run this one continues, None for a start from step 0; ConfigError for a `resume=` that cannot be
    continued with this config."""
    value, from_sweep = requested(cfg)
    if not value:
        return None
    current = training_config(cfg)
    if value == "auto":
        return _auto(current)
    run_dir = Path(value) if from_sweep else _run_dir(value, cfg)
    box = Checkpoints(run_dir)
    loaded = None if box.finished() else box.latest()
    if from_sweep and loaded is None:
        log.info("no usable checkpoint of this trial's previous run in %s: starting from step 0", run_dir)
        return None
    if box.finished():
        raise ConfigError(f"resume={value}: that run has ended (finished or pruned); start a new run without resume")
    if loaded is None:
        raise ConfigError(
            f"resume={value}: no usable checkpoint in {box.root}; a run writes them with checkpoint_every=N "
            "(steps): start it again without resume"
        )
    changed = differences(loaded.manifest.get("config", {}), current)
    if changed:
        raise ConfigError(
            f"resume={value}: its checkpoint was trained with another config: {'; '.join(changed)}; "
            "rerun with the checkpoint's values, or start a new run without resume"
        )
    return Origin(run_dir, loaded)


def _auto(current: dict[str, Any]) -> Origin | None:
    """The newest interrupted run with this training config whose checkpoint loads."""
    newest: list[tuple[float, Path]] = []
    for run_dir in _candidates():
        box = Checkpoints(run_dir)
        if box.finished():
            continue
        manifests = box.manifests()
        if manifests and not differences(manifests[0][1].get("config", {}), current):
            newest.append((manifests[0][0].stat().st_mtime, run_dir))
    for _, run_dir in sorted(newest, reverse=True):
        loaded = Checkpoints(run_dir).latest()
        if loaded is not None:
            log.info("resume=auto: continuing %s from step %d", run_dir, loaded.step)
            return Origin(run_dir, loaded)
    log.info("resume=auto: no interrupted run with this training config; starting from step 0")
    return None


def _candidates() -> list[Path]:
    """Run dirs: outputs/runs/*, and this Hydra run's dir and its siblings (a fixed hydra.run.dir)."""
    from hydra.core.hydra_config import HydraConfig

    roots = [tracking.outputs_dir() / "runs"]
    found: list[Path] = []
    if HydraConfig.initialized():
        here = Path(HydraConfig.get().runtime.output_dir).resolve()
        found.append(here)
        roots.append(here.parent)
    for root in roots:
        if root.is_dir():
            found.extend(p.resolve() for p in root.iterdir() if (p / "checkpoints").is_dir())
    return list(dict.fromkeys(p for p in found if (p / "checkpoints").is_dir()))


def _run_dir(value: str, cfg: DictConfig) -> Path:
    """`resume=` as a run dir: the folder itself, or the one an MLflow run's `sweeps.run_dir` tag names."""
    path = Path(value)
    if path.is_dir():
        return path.resolve()
    if not RUN_ID.match(value):
        raise ConfigError(
            f"resume={value}: no such run dir; give resume=auto, a run dir (outputs/runs/<time>) or an MLflow run id"
        )
    from mlflow.tracking import MlflowClient

    uri = tracking.resolve_uri(cfg.tracking)
    try:
        run = MlflowClient(uri).get_run(value)
    except Exception:
        raise ConfigError(
            f"resume={value}: no MLflow run with this id in {uri}; check it (python -m sweeps ui) or give the run dir"
        ) from None
    tagged = run.data.tags.get(RUN_DIR_TAG)
    if not tagged or not Path(tagged).is_dir():
        raise ConfigError(
            f"resume={value}: this MLflow run names no run dir on this machine ({tagged or 'no sweeps.run_dir tag'}); "
            "give the run dir instead"
        )
    return Path(tagged)


def logged_steps(run_id: str) -> dict[str, int]:
    """The last step each metric of an MLflow run was logged at (the active tracking store)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    keys = client.get_run(run_id).data.metrics
    return {key: max((m.step for m in client.get_metric_history(run_id, key)), default=-1) for key in keys}


def restore(job: Any, origin: Origin, main: bool) -> TrainingState:
    """The resume phase of `train`: the job's model, optimizer, schedule, RNGs and evaluations as the checkpoint
    has them; the run goes on in its own run dir. Returns where `fit` starts."""
    from sweeps.checkpoints import restore_rng

    loaded = origin.checkpoint
    job.net.load_state_dict(loaded.model)
    job.opt.load_state_dict(loaded.training["optimizer"])
    job.sched.load_state_dict(loaded.training["scheduler"])
    state = loaded.state()
    restore_rng(state.rng)
    job.evaluator.resume(state, origin.run_dir)
    job.out_dir = job.evaluator.out_dir = origin.run_dir if main else None
    log.info("resuming %s from step %d (%s)", origin.run_dir, state.step, loaded.path.name)
    return state


def saver(cfg: DictConfig, job: Any, main: bool):
    """`fit`'s checkpoint hook: rank 0 writes the job's whole training state (the others write nothing)."""

    def save(state: TrainingState) -> None:
        if not main:
            return
        import mlflow

        from sweeps.checkpoints import rng_state

        state.history, state.rng = job.evaluator.history, rng_state()
        state.early_stopping = job.evaluator.stopping.state()
        training = {**vars(state), "optimizer": job.opt.state_dict(), "scheduler": job.sched.state_dict()}
        meta = {"config": training_config(cfg), "mlflow_run_id": mlflow.active_run().info.run_id}
        Checkpoints(job.out_dir, cfg.checkpoint_keep).save(state.step, job.net.state_dict(), training, meta)

    return save
