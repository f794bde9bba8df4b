"""What our Hydra launchers share: waiting for any of several jobs, and Hydra's batch `launch()` on top of an
asynchronous `submit()`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig


def wait_any(handles: Sequence[Any], timeout: float | None, poll: float) -> list[Any]:
    """The handles that are done, once at least one is (or [] after `timeout` seconds)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done = [h for h in handles if h.done()]
        if done or not handles:
            return done
        if deadline is not None and time.monotonic() >= deadline:
            return []
        time.sleep(poll)


def start_batch(config: DictConfig) -> Path:
    """What every Hydra launcher does first: global resolvers, Hydra's logging, the sweep dir (returned)."""
    from hydra.core.utils import configure_log, setup_globals

    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return sweep_dir


def log_batch(
    log: logging.Logger, where: str, sweep_dir: Path, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> None:
    """Hydra's launch message: how many jobs go where, the sweep dir, and each job's overrides."""
    from hydra.core.utils import filter_overrides

    log.info(f"Launching {len(job_overrides)} jobs {where}")
    log.info(f"Sweep output dir : {sweep_dir}")
    for i, overrides in enumerate(job_overrides):
        log.info(f"\t#{initial_job_idx + i} : {' '.join(filter_overrides(overrides))}")


def run_batch(
    submit: Callable[[Sequence[str], int, dict[str, str]], Any],
    has_free_slot: Callable[[int], bool],
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    poll: float,
    cancel_wait: float | None = None,
) -> list[JobReturn]:
    """Run every job, starting one whenever `has_free_slot(running)` allows; results in job order. On any
    error or Ctrl-C the running jobs are cancelled (and waited for, up to `cancel_wait` seconds each)."""
    pending = list(enumerate(job_overrides))
    running: dict[Any, int] = {}
    results: list[JobReturn | None] = [None] * len(job_overrides)
    try:
        while pending or running:
            while pending and has_free_slot(len(running)):
                i, overrides = pending.pop(0)
                running[submit(overrides, initial_job_idx + i, {})] = i
            for handle in wait_any(list(running), timeout=1.0, poll=poll):
                results[running.pop(handle)] = handle.result()
    except BaseException:
        for handle in running:
            handle.cancel()
        for handle in running:
            handle.wait(timeout=cancel_wait)
        raise
    return [r for r in results if r is not None]


def failure_text(ret: JobReturn) -> str | None:
    """The traceback of a job that failed with an exception, else None."""
    if ret.status != JobStatus.FAILED or not isinstance(ret._return_value, BaseException):
        return None
    import traceback

    return "".join(traceback.format_exception(ret._return_value))


def pickled_result(ret: JobReturn, tb: str | None, **extra: Any) -> bytes:
    """A job's result as the launcher's driver reads it back: `ret`, its traceback and `extra`. A return value
    (or error) that does not pickle fails the job with a message saying so."""
    import cloudpickle

    record = {"ret": ret, "traceback": tb, **extra}
    try:
        return cloudpickle.dumps(record)
    except Exception as e:
        if ret.status == JobStatus.COMPLETED:
            reason = f"its return value could not be pickled: {e!r}"
        else:
            reason = f"{type(ret._return_value).__name__}: {ret._return_value}"
        ret.status = JobStatus.FAILED
        ret.return_value = RuntimeError(reason)
        return cloudpickle.dumps(record)
