"""The sweeper's options, checked, and the names users know them by."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from sweeps.errors import ConfigError

from . import _study

SAMPLER_DEFAULTS: dict[str, Any] = {"name": "tpe", "seed": None, "kwargs": {}}


def plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


class KeyNames:
    """Names sweeper options as the user sets them: `sweep.pruner` when hydra.sweeper.pruner.name is
    `${sweep.pruner}`, else `hydra.sweeper.pruner.name`."""

    INTERPOLATION = re.compile(r"\$\{([\w.\-]+)\}")

    def __init__(self, config: DictConfig) -> None:
        self.config = config

    def __call__(self, path: str) -> str:
        shown = "hydra.sweeper"
        node: Any = self.config.hydra.sweeper
        parts = path.split(".")
        for i, part in enumerate(parts):
            child = node._get_node(part) if isinstance(node, DictConfig) and part in node else None
            if child is None:
                return ".".join([shown, *parts[i:]])
            match = self.INTERPOLATION.fullmatch(str(child._value())) if child._is_interpolation() else None
            if match:
                shown = match.group(1)
                node = OmegaConf.select(self.config, shown, default=None)
            else:
                shown = f"{shown}.{part}"
                node = child
        return shown


@dataclass
class Options:
    """The sweeper's options, checked."""

    sampler: dict[str, Any]
    pruner: dict[str, Any]
    directions: list[str]
    metric: list[str] | None
    study_name: str | None
    storage: str | None
    n_trials: int
    timeout: float | None
    workers: int | None
    max_failure_rate: float
    params: dict[str, Any]
    custom_search_space: str | None
    preflight: str | None
    finish: str | None
    poll_interval: float

    @classmethod
    def parse(cls, raw: Mapping[str, Any], key: KeyNames) -> Options:
        o = {k: plain(v) for k, v in raw.items()}
        errors = []
        sampler = {**SAMPLER_DEFAULTS, **(o.get("sampler") or {})}
        if sampler["name"] not in _study.SAMPLERS:
            errors.append(
                f"{key('sampler.name')}={sampler['name']}: unknown sampler; choose one of {', '.join(_study.SAMPLERS)}"
            )
        pruner = dict(o.get("pruner") or {"name": "median"})
        if pruner.get("name") not in _study.PRUNERS:
            errors.append(
                f"{key('pruner.name')}={pruner.get('name')}: unknown pruner; choose one of {', '.join(_study.PRUNERS)}"
            )
        direction = o.get("direction", "minimize")
        directions = [str(d) for d in (direction if isinstance(direction, list) else [direction])]
        bad = [d for d in directions if d not in _study.DIRECTIONS]
        if bad or not directions:
            errors.append(
                f"{key('direction')}={direction}: each direction is minimize or maximize "
                "(a list of them for several objectives)"
            )
        metric = o.get("metric")
        metrics = None if metric is None else [str(m) for m in (metric if isinstance(metric, list) else [metric])]
        if metrics is not None and len(metrics) != len(directions):
            errors.append(
                f"{key('direction')}={direction}: {len(directions)} direction(s) for {len(metrics)} objective(s) "
                f"({key('metric')}={metric}); give one direction per objective"
            )
        n_trials = o.get("n_trials", 20)
        if not isinstance(n_trials, int) or n_trials < 1:
            errors.append(f"{key('n_trials')}={n_trials}: must be a whole number of 1 or more")
        workers = o.get("workers", 1)
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            errors.append(f"{key('workers')}={workers}: must be 1 or more (or null: the launcher's slots)")
        rate = o.get("max_failure_rate", 0.25)
        if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            errors.append(f"{key('max_failure_rate')}={rate}: must be a fraction between 0 and 1")
        timeout = o.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            errors.append(f"{key('timeout')}={timeout}: must be a number of seconds above 0 (or null)")
        poll = o.get("poll_interval", 0.5)
        if not isinstance(poll, (int, float)) or poll <= 0:
            errors.append(f"{key('poll_interval')}={poll}: must be a number of seconds above 0")
        params = o.get("params") or {}
        if not isinstance(params, dict):
            errors.append(f"{key('params')}: must be a mapping key -> search-space expression")
        if errors:
            raise ConfigError(*errors)
        return cls(
            sampler=sampler,
            pruner=pruner,
            directions=directions,
            metric=metrics,
            study_name=o.get("study_name"),
            storage=o.get("storage"),
            n_trials=n_trials,
            timeout=timeout,
            workers=workers,
            max_failure_rate=float(rate),
            params=params,
            custom_search_space=o.get("custom_search_space"),
            preflight=o.get("preflight"),
            finish=o.get("finish"),
            poll_interval=float(poll),
        )
