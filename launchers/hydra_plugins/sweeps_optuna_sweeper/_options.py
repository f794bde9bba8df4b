"""The sweeper's options (config.py defines each, with its default), checked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from sweeps.errors import ConfigError

from . import _study


def plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def key(path: str) -> str:
    """A sweeper option as users set it."""
    return f"hydra.sweeper.{path}"


@dataclass
class Options:
    """The sweeper's options, checked."""

    sampler: dict[str, Any]
    pruner: dict[str, Any]
    directions: list[str]
    metric: list[str] | None
    study_name: str | None
    storage: str | None
    n_trials: int | None
    timeout: float | None
    workers: int | None
    max_failure_rate: float
    params: dict[str, Any]
    custom_search_space: str | None
    preflight: str | None
    finish: str | None
    poll_interval: float
    max_resumes: int = 2

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Options:
        o = {k: plain(v) for k, v in raw.items()}
        errors = []
        sampler = o["sampler"]
        if sampler["name"] not in _study.SAMPLERS:
            errors.append(
                f"{key('sampler.name')}={sampler['name']}: unknown sampler; choose one of {', '.join(_study.SAMPLERS)}"
            )
        pruner = o["pruner"]
        if pruner["name"] not in _study.PRUNERS:
            errors.append(
                f"{key('pruner.name')}={pruner['name']}: unknown pruner; choose one of {', '.join(_study.PRUNERS)}"
            )
        direction = o["direction"]
        directions = [str(d) for d in (direction if isinstance(direction, list) else [direction])]
        bad = [d for d in directions if d not in _study.DIRECTIONS]
        if bad or not directions:
            errors.append(
                f"{key('direction')}={direction}: each direction is minimize or maximize "
                "(a list of them for several objectives)"
            )
        metric = o["metric"]
        metrics = None if metric is None else [str(m) for m in (metric if isinstance(metric, list) else [metric])]
        if metrics is not None and len(metrics) != len(directions):
            errors.append(
                f"{key('direction')}={direction}: {len(directions)} direction(s) for {len(metrics)} objective(s) "
                f"({key('metric')}={metric}); give one direction per objective"
            )
        n_trials = o["n_trials"]
        if n_trials is None and sampler["name"] != "grid":
            errors.append(f"{key('n_trials')}=null: only a grid has a size of its own; give a whole number of trials")
        elif n_trials is not None and (not isinstance(n_trials, int) or n_trials < 1):
            errors.append(f"{key('n_trials')}={n_trials}: must be a whole number of 1 or more")
        workers = o["workers"]
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            errors.append(f"{key('workers')}={workers}: must be 1 or more (or null: the launcher's slots)")
        rate = o["max_failure_rate"]
        if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            errors.append(f"{key('max_failure_rate')}={rate}: must be a fraction between 0 and 1")
        timeout = o["timeout"]
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            errors.append(f"{key('timeout')}={timeout}: must be a number of seconds above 0 (or null)")
        poll = o["poll_interval"]
        if not isinstance(poll, (int, float)) or poll <= 0:
            errors.append(f"{key('poll_interval')}={poll}: must be a number of seconds above 0")
        max_resumes = o.get("max_resumes", 2)
        if not isinstance(max_resumes, int) or max_resumes < 0:
            errors.append(f"{key('max_resumes')}={max_resumes}: must be a whole number of 0 or more")
        params = o["params"] or {}
        if not isinstance(params, dict):
            errors.append(f"{key('params')}: must be a mapping key -> search-space expression")
        if errors:
            raise ConfigError(*errors)
        return cls(
            sampler=sampler,
            pruner=pruner,
            directions=directions,
            metric=metrics,
            study_name=o["study_name"],
            storage=o["storage"],
            n_trials=n_trials,
            timeout=timeout,
            workers=workers,
            max_failure_rate=float(rate),
            params=params,
            custom_search_space=o["custom_search_space"],
            preflight=o["preflight"],
            finish=o["finish"],
            poll_interval=float(poll),
            max_resumes=max_resumes,
        )
