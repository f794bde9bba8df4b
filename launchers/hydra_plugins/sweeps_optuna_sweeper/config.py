"""Schema of `hydra/sweeper=sweeps_optuna`."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class SamplerConf:
    # tpe | random | grid | cmaes | nsgaii | qmc (https://optuna.readthedocs.io/en/stable/reference/samplers)
    name: str = "tpe"
    # Seed of the sampler; null: a random seed.
    seed: int | None = None
    # Further keyword arguments of the sampler class, e.g. {n_startup_trials: 5} for tpe.
    # With more than one worker, tpe gets constant_liar=true unless set here.
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class PrunerConf:
    # median | hyperband | successive_halving | none. Pruning needs trials that report their metric
    # (lines {"step": int, "value": float} appended to $SWEEPS_PROGRESS_FILE) and a single objective.
    name: str = "median"
    # median: trials that finish before pruning starts.
    n_startup_trials: int = 5
    # Steps a trial runs before it may be pruned (median); for hyperband and successive_halving it is
    # their min_resource unless that is set.
    n_warmup_steps: int = 0
    # median: prune only at every interval_steps-th step.
    interval_steps: int = 1
    # hyperband, successive_halving: steps before the first rung; null: the pruner's default.
    min_resource: Any | None = None
    # hyperband: steps of a full trial; null: "auto" (the largest step seen).
    max_resource: Any | None = None
    # hyperband, successive_halving: null: the pruner's default (3 and 4).
    reduction_factor: int | None = None
    # Further keyword arguments of the pruner class.
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepsOptunaSweeperConf:
    _target_: str = "hydra_plugins.sweeps_optuna_sweeper.optuna_sweeper.SweepsOptunaSweeper"

    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)

    # minimize | maximize, or a list of them for several objectives (the job returns a list).
    direction: Any = "minimize"

    # Names of the values the job returns, in direction order (a str or a list). Optional; when set,
    # their count must match `direction`, and a job returning a dict is read by these keys.
    metric: Any | None = None

    # Rerunning with the same study name resumes the study. null: the job name plus a digest of the
    # search space, directions and command-line overrides, so the same command resumes.
    study_name: str | None = None

    # SQLAlchemy URL of Optuna's RDB storage; null: sqlite:///<original cwd>/outputs/optuna.db
    storage: str | None = None

    # Trials of the study to finish (COMPLETE, PRUNED or FAIL), counting those of earlier runs; null (grid sampler
    # only): every point of the grid.
    n_trials: int | None = 20

    # Seconds after which no new trial starts (running trials finish); null: no limit.
    timeout: float | None = None

    # Trials running at once. It sets the launcher's n_jobs when the launcher has one; with another
    # launcher, trials run in batches of this size. null: the launcher's own slot count.
    workers: int | None = 1

    # The sweep stops starting trials once more than this fraction of n_trials has failed.
    max_failure_rate: float = 0.25

    # Search space, key -> expression in Hydra's override syntax, as in hydra-optuna-sweeper:
    # interval(a, b), int(interval(a, b)), tag(log, interval(a, b)), choice(a, b), a,b,c, range(a, b[, step]).
    # A plain value is passed to every trial. Command-line sweeps (lr=1e-5,2e-5) join as choices.
    params: dict[str, Any] | None = None

    # Dotted path of a function (cfg: DictConfig, trial: optuna.Trial) -> None that suggests more
    # parameters, as in hydra-optuna-sweeper.
    custom_search_space: str | None = None

    # Dotted path of a function (cfg: DictConfig) -> None called with the first trial's config before
    # anything starts; it raises sweeps.errors.ConfigError for bad input.
    preflight: str | None = None

    # Dotted path of a function (cfg: DictConfig, study_name: str) -> None called with the first trial's
    # config once a sweep has a best trial, e.g. to promote and deploy it; it may raise ConfigError.
    finish: str | None = None

    # Seconds between reads of the trials' progress files (pruning decisions).
    poll_interval: float = 0.5

    # A trial whose job was lost (its process killed by a signal the sweep did not send) runs again, continuing
    # from its last checkpoint, up to this many times in a row; then it fails.
    max_resumes: int = 2


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="sweeps_optuna",
    node=SweepsOptunaSweeperConf,
    provider="sweeps_optuna_sweeper",
)
