"""What a trial's job came back with, as the study records it: its objective value(s), its error, its dir."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from ._options import key


def values(value: Any, directions: int, metric: list[str] | None) -> list[float]:
    """The objective value(s) from a job's return value (a number, a list, or a dict read by `metric`);
    ValueError saying what is wrong with it."""
    if isinstance(value, Mapping):
        if not metric:
            raise ValueError(
                f"the job returned a dict ({sorted(value)}); set {key('metric')} to the key(s) to optimise"
            )
        missing = [m for m in metric if m not in value]
        if missing:
            raise ValueError(f"the job's result has no {missing} (keys: {sorted(value)})")
        value = [value[m] for m in metric]
    raw = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        numbers = [float(v) for v in raw]
    except (TypeError, ValueError):
        raise ValueError(f"the job returned {value!r}; it must return {directions} number(s)") from None
    if len(numbers) != directions:
        raise ValueError(f"the job returned {len(numbers)} value(s) for {directions} direction(s)")
    if any(math.isnan(v) for v in numbers):
        raise ValueError(f"the job returned NaN ({numbers})")
    return numbers


def job_dir(ret: JobReturn) -> str | None:
    if ret.hydra_cfg is None:
        return None
    return OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default=None)


def job_error(ret: JobReturn) -> str | None:
    """None for a job that completed, else its error in one line."""
    if ret.status == JobStatus.COMPLETED:
        return None
    error = ret._return_value
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}".strip()
    return f"job failed: {error}"
