"""The sweep's preparation: check every input before any trial exists and settle what the loop runs with.

`prepare()` parses the options and the search space, imports the user's functions, composes the trial
config for examples covering every choice (then runs the preflight), instantiates the launcher and opens
the study's storage, sampler and pruner. Bad input raises ConfigError; the result is a `Plan`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext
from hydra.utils import get_method
from omegaconf import DictConfig, open_dict, read_write
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import RDBStorage

from sweeps.errors import ConfigError
from sweeps.launching import AsyncLauncher

from . import _search_space, _study
from ._options import Options, key, plain
from ._search_space import SearchSpace

if TYPE_CHECKING:
    from .optuna_sweeper import SweepsOptunaSweeper

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What a checked sweep runs with."""

    config: DictConfig  # the sweep's config (hydra node included)
    sweep_dir: Path
    opts: Options
    space: SearchSpace
    custom: Callable[..., Any] | None  # custom_search_space(config, trial)
    finish: Callable[..., Any] | None  # finish(task_cfg, study_name), after a sweep with a best trial
    task_cfg: DictConfig | None  # the first example trial's config, without its hydra node
    launcher: Launcher
    slots: int  # trials at once: the launcher's slots, else workers
    sampler: BaseSampler
    pruner: BasePruner
    storage_url: str
    storage: RDBStorage
    study_name: str

    @property
    def multi(self) -> bool:
        """Several objectives (no pruning then)."""
        return len(self.opts.directions) > 1

    @property
    def asynchronous(self) -> bool:
        """A trial starts as soon as a slot frees up (else batches through launch())."""
        return isinstance(self.launcher, AsyncLauncher)

    @property
    def pruner_name(self) -> str:
        return "none (several objectives)" if self.multi else str(self.opts.pruner.get("name"))


def prepare(sweeper: SweepsOptunaSweeper, arguments: list[str]) -> Plan:
    """Check the sweep given by the sweeper's options and the command line's sweep `arguments`."""
    assert sweeper.config is not None and sweeper.hydra_context is not None
    config, hydra_context, raw_options = sweeper.config, sweeper.hydra_context, sweeper.options
    errors = []
    try:
        opts = Options.parse(raw_options)
    except ConfigError as e:
        errors += e.errors
    params = plain(raw_options.get("params")) or {}
    entries = [(param_line(k, v), key(f"params.{k}")) for k, v in dict(params).items()]
    entries += [(a, a.split("=", 1)[0]) for a in arguments]
    try:
        space = _search_space.parse(entries)
    except ConfigError as e:
        errors += e.errors
    if errors:
        raise ConfigError(*errors)
    if not space.params and not opts.custom_search_space:
        log.warning(f"The search space is empty ({key('params')}): every trial runs the same config")
    custom = _function(opts.custom_search_space, "custom_search_space")
    preflight = _function(opts.preflight, "preflight")
    finish = _function(opts.finish, "finish")

    name = opts.sampler["name"]
    _study.check_sampler_packages(name, key("sampler.name"))
    grid = None
    if name == "grid":
        names = {n: key(f"params.{n}") if n in opts.params else n for n in space.params}
        grid = space.grid(names)
        size = math.prod(len(v) for v in grid.values())
        if opts.n_trials is None or size < opts.n_trials:
            log.info(f"Grid of {size} points: n_trials {opts.n_trials} -> {size}")
            opts.n_trials = size
    pruner = _study.make_pruner(opts.pruner, key("pruner"))

    launcher = _launcher(sweeper, opts)
    launcher_slots = launcher.slots if isinstance(launcher, AsyncLauncher) else None
    slots = int(launcher_slots) if launcher_slots else (opts.workers or 1)
    sampler_kwargs = opts.sampler.get("kwargs") or {}
    sampler = _study.make_sampler(name, opts.sampler.get("seed"), sampler_kwargs, key("sampler.name"), grid, slots)

    task_cfg = _check_configs(hydra_context, config, space, preflight)

    storage_url = opts.storage or _study.default_storage(_outputs_dir(config))
    study_name = opts.study_name or _default_study_name(config, opts, arguments)
    storage = _study.open_storage(storage_url, key("storage"))
    stored = _study.stored_directions(storage, study_name)
    if stored is not None and stored != opts.directions:
        raise ConfigError(
            f"{key('direction')}={opts.directions if len(opts.directions) > 1 else opts.directions[0]}: study "
            f"'{study_name}' was created with {len(stored)} objective(s) {stored}; use the same "
            f"direction(s) or another {key('study_name')}"
        )
    existing = _study.trial_count(storage, study_name)
    seed = opts.sampler.get("seed")
    if existing and seed is not None:
        # a resumed study must not replay the suggestions of its first run
        sampler = _study.make_sampler(name, seed + existing, sampler_kwargs, key("sampler.name"), grid, slots)
    return Plan(
        config=config,
        sweep_dir=Path(str(config.hydra.sweep.dir)).absolute(),
        opts=opts,
        space=space,
        custom=custom,
        finish=finish,
        task_cfg=task_cfg,
        launcher=launcher,
        slots=slots,
        sampler=sampler,
        pruner=pruner,
        storage_url=storage_url,
        storage=storage,
        study_name=study_name,
    )


def param_line(name: str, value: Any) -> str:
    """`name=expression` for a `params` entry (a YAML number or list is a fixed value)."""
    if isinstance(value, str):
        return f"{name}={value}"
    if isinstance(value, (list, dict)):
        return f"{name}={_search_space.compact(value)}"
    return f"{name}={_search_space.format_value(value)}"


def _function(path: str | None, option: str) -> Callable[..., Any] | None:
    if not path:
        return None
    try:
        return get_method(path)
    except Exception as e:
        raise ConfigError(
            f"{key(option)}={path}: cannot import this function ({_search_space.first_line(e)}); "
            "give a dotted path module.function"
        ) from e


def _outputs_dir(config: DictConfig) -> Path:
    """$SWEEPS_OUTPUTS, else outputs/ under the directory the command ran in."""
    if os.environ.get("SWEEPS_OUTPUTS"):
        return Path(os.environ["SWEEPS_OUTPUTS"]).resolve()
    return Path(str(config.hydra.runtime.cwd)) / "outputs"


def _default_study_name(config: DictConfig, opts: Options, arguments: list[str]) -> str:
    basis = {
        "params": sorted(param_line(k, v) for k, v in opts.params.items()),
        "arguments": sorted(arguments),
        "directions": opts.directions,
        "config": str(config.hydra.job.config_name),
    }
    digest = hashlib.sha1(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:8]
    return f"{config.hydra.job.name}-{digest}"


def _launcher(sweeper: SweepsOptunaSweeper, opts: Options) -> Launcher:
    """The configured launcher; with `workers` set, its n_jobs (when it has one) becomes workers."""
    assert sweeper.config is not None and sweeper.hydra_context is not None
    launcher_cfg = sweeper.config.hydra.launcher
    if opts.workers is not None and "n_jobs" in launcher_cfg:
        with read_write(launcher_cfg), open_dict(launcher_cfg):
            launcher_cfg.n_jobs = opts.workers
    return Plugins.instance().instantiate_launcher(
        hydra_context=sweeper.hydra_context, task_function=sweeper.task_function, config=sweeper.config
    )


def _check_configs(
    hydra_context: HydraContext,
    config: DictConfig,
    space: SearchSpace,
    preflight: Callable[[DictConfig], None] | None,
) -> DictConfig | None:
    """Compose the job config for parameter sets covering every choice; then run the preflight. Returns the
    first one's config without its hydra node (None for an empty set)."""
    loader = hydra_context.config_loader
    first: DictConfig | None = None
    for values in space.example_values()[:64]:
        overrides = space.overrides(values)
        try:
            cfg = loader.load_sweep_config(config, overrides)
        except Exception as e:
            raise ConfigError(
                f"{' '.join(overrides)}: this trial's config cannot be composed "
                f"({_search_space.first_line(e)}); fix the search space or the config"
            ) from e
        first = first or cfg
    if first is None:
        return None
    task_cfg = copy.deepcopy(first)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    if preflight is None:
        return task_cfg
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(first)
    try:
        preflight(task_cfg)
    finally:
        if saved is not None:
            HydraConfig.instance().cfg = saved
    return task_cfg
