"""Optuna pieces built from the sweeper config: sampler, pruner, storage, and resume bookkeeping."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from sweeps.channel import ProgressReader
from sweeps.errors import ConfigError

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random", "grid", "cmaes", "nsgaii", "qmc")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
DIRECTIONS = ("minimize", "maximize")

# user attributes the sweeper keeps on trials
STALE = "stale"  # RUNNING when a driver died; failed and enqueued again on resume
INTERRUPTED = "interrupted"  # running at Ctrl-C; failed and enqueued again
RETRY_OF = "retry_of"  # on a trial run again: the number of the one it replaces (same parameters)
LOST = "lost"  # its job's process or machine went away (sweeps.launching.LostJob); failed and enqueued again
RUN_DIR = "sweeps:run_dir"  # the run dir the trial announced (its checkpoints)
RESUME_FROM = "sweeps:resume_from"  # on a trial run again: the run dir it continues from (sweeps.channel)
RESUMES = "sweeps:resumes"  # how many times the trial's lineage was run again after a lost job
EXTERNAL_ID = "sweeps:external_id"  # the launcher's id of the trial's job (remote runs), for attach()
PROGRESS_FILE = "sweeps:progress_file"
MLFLOW_RUN_ID = "mlflow_run_id"  # the trial's MLflow run, as the trial reported it


def make_sampler(
    name: str,
    seed: int | None,
    kwargs: Mapping[str, Any],
    key: str,
    grid: dict[str, list[Any]] | None = None,
    workers: int = 1,
) -> BaseSampler:
    """Build the sampler; `key` is the config key naming the sampler in messages."""
    kwargs = dict(kwargs)
    if name not in SAMPLERS:
        raise ConfigError(f"{key}={name}: unknown sampler; choose one of {', '.join(SAMPLERS)}")
    samplers = optuna.samplers
    try:
        if name == "tpe":
            if workers > 1:
                kwargs.setdefault("constant_liar", True)
            return samplers.TPESampler(seed=seed, **kwargs)
        if name == "random":
            return samplers.RandomSampler(seed=seed, **kwargs)
        if name == "grid":
            assert grid is not None
            return samplers.GridSampler(grid, seed=seed, **kwargs)
        if name == "cmaes":
            return samplers.CmaEsSampler(seed=seed, **kwargs)
        if name == "nsgaii":
            return samplers.NSGAIISampler(seed=seed, **kwargs)
        return samplers.QMCSampler(seed=seed, **kwargs)
    except ImportError as e:
        raise ConfigError(f"{key}={name}: this sampler needs a package that is missing ({e}); install it") from e
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}={name}: bad sampler arguments {dict(kwargs)} ({e})") from e


def check_sampler_packages(name: str, key: str) -> None:
    """Samplers import optional packages lazily; check them before any trial."""
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"{key}=cmaes: the cmaes sampler needs the 'cmaes' package; pip install cmaes") from e
    if name == "qmc":
        try:
            import scipy.stats  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"{key}=qmc: the qmc sampler needs scipy; pip install scipy") from e


def make_pruner(conf: Mapping[str, Any], key: str) -> BasePruner:
    """Build the pruner from the `pruner` node; `key` names that node in messages."""
    name = conf.get("name", "median")
    extra = dict(conf.get("kwargs") or {})
    pruners = optuna.pruners
    try:
        if name == "median":
            return pruners.MedianPruner(
                n_startup_trials=conf.get("n_startup_trials", 5),
                n_warmup_steps=conf.get("n_warmup_steps", 0),
                interval_steps=conf.get("interval_steps", 1),
                **extra,
            )
        if name in ("hyperband", "successive_halving"):
            min_resource = conf.get("min_resource")
            if min_resource is None and conf.get("n_warmup_steps"):
                min_resource = conf["n_warmup_steps"]
            if min_resource is not None:
                extra.setdefault("min_resource", min_resource)
            if conf.get("reduction_factor") is not None:
                extra.setdefault("reduction_factor", conf["reduction_factor"])
            if name == "hyperband":
                if conf.get("max_resource") is not None:
                    extra.setdefault("max_resource", conf["max_resource"])
                return pruners.HyperbandPruner(**extra)
            return pruners.SuccessiveHalvingPruner(**extra)
        if name == "none":
            return pruners.NopPruner()
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}.name={name}: bad pruner settings ({e})") from e
    raise ConfigError(f"{key}.name={name}: unknown pruner; choose one of {', '.join(PRUNERS)}")


def default_storage(outputs: Path) -> str:
    """SQLite file optuna.db in the project's outputs/ folder."""
    outputs.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{outputs / 'optuna.db'}"


def masked(url: str) -> str:
    """The storage URL without its password, for logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def open_storage(url: str, key: str) -> RDBStorage:
    """Open Optuna's RDB storage. SQLite waits up to 60 s for a lock instead of failing."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        return RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"{key}={masked(url)}: the study storage cannot be opened ({reason}); "
            "give a reachable SQLAlchemy URL, e.g. sqlite:///outputs/optuna.db"
        ) from e


def stored_directions(storage: RDBStorage, study_name: str) -> list[str] | None:
    """Directions of an existing study, or None when there is no such study."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return None
    return [d.name.lower() for d in storage.get_study_directions(study_id)]


def trial_count(storage: RDBStorage, study_name: str) -> int:
    """Number of trials the study has (0 when it does not exist)."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False))


def counts_toward_budget(t: FrozenTrial) -> bool:
    """Finished trials count toward n_trials, except stale, interrupted and lost ones (they run again)."""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    again = t.user_attrs.get(STALE) or t.user_attrs.get(INTERRUPTED) or t.user_attrs.get(LOST)
    return t.state == TrialState.FAIL and not again


def counted_failure(t: FrozenTrial) -> bool:
    return t.state == TrialState.FAIL and counts_toward_budget(t)


def fail_stale_trials(study: optuna.Study, storage: RDBStorage, keep: set[int]) -> list[FrozenTrial]:
    """Trials left RUNNING by a driver that died (except `keep`): mark them FAIL (stale), enqueue their
    params again, to continue from the run dir they announced (their checkpoints)."""
    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.number not in keep]
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, STALE, True)
        study.tell(t.number, state=TrialState.FAIL)
        requeue(study, t.params, t.number, announced_run_dir(t), t.user_attrs.get(RESUMES, 0))
    return stale


def announced_run_dir(t: FrozenTrial) -> str | None:
    """The run dir a trial announced: recorded by the driver, else read from its progress file (a driver killed
    before it read the announcement)."""
    if t.user_attrs.get(RUN_DIR):
        return str(t.user_attrs[RUN_DIR])
    progress = t.user_attrs.get(PROGRESS_FILE)
    if not progress:
        return None
    reader = ProgressReader(Path(progress))
    reader.read()
    return reader.run_dir


def requeue(
    study: optuna.Study, params: Mapping[str, Any], number: int, run_dir: str | None = None, resumes: int = 0
) -> None:
    """Queue a trial with the same parameters, to continue from `run_dir` when it has one; the next ask()
    returns it."""
    attrs: dict[str, Any] = {RETRY_OF: number, RESUMES: resumes}
    if run_dir:
        attrs[RESUME_FROM] = run_dir
    study.enqueue_trial(dict(params), user_attrs=attrs)


def run_lost_again(study: optuna.Study, trial: optuna.Trial, run_dir: str | None, error: str, limit: int) -> bool:
    """A trial whose job was lost (sweeps.launching.LostJob) runs again from its checkpoint, up to `limit` times
    in a row: failed (tagged lost, not counted), its parameters queued with its run dir. False past the limit."""
    resumes = int(trial.user_attrs.get(RESUMES, 0))
    if resumes >= limit:
        return False
    trial.set_user_attr(LOST, error[:2000])
    study.tell(trial, state=TrialState.FAIL)
    requeue(study, trial.params, trial.number, run_dir, resumes + 1)
    log.warning(f"Trial {trial.number} lost its job ({error}): queued again to continue from its checkpoint")
    return True


def requeue_interrupted(study: optuna.Study, trial: optuna.Trial, progress: ProgressReader) -> None:
    """A trial running at Ctrl-C: failed (tagged interrupted, not counted), queued again with the run dir it
    announced (read from its last progress lines)."""
    progress.read()
    trial.set_user_attr(INTERRUPTED, True)
    study.tell(trial, state=TrialState.FAIL)
    requeue(study, trial.params, trial.number, progress.run_dir, trial.user_attrs.get(RESUMES, 0))
