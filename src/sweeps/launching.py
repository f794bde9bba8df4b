"""The contract of our asynchronous Hydra launchers (`AsyncLauncher`, `AttachableLauncher`, `JobHandle`) and
what they share: waiting for any of several jobs, Hydra's batch `launch()` on top of `submit()`, and the
result records their workers write.

Hydra's `Launcher` runs a batch of jobs and returns when all have ended. An `AsyncLauncher` also starts
jobs one at a time (`submit()`, at most `slots` at once) and hands back a `JobHandle` per job, so a sweeper
can start the next trial as soon as a slot frees up and stop one early. Cheap to import: the plugin classes
subclass these, and Hydra imports every plugin class module to find its plugins.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig


class LostJob(RuntimeError):
    """A job's error when its process or machine went away before it returned (killed by a signal nobody in the
    sweep sent, its cluster lost): the sweeper runs the trial again from its checkpoint."""


class JobHandle(abc.ABC):
    """One job started by an `AsyncLauncher`. The driver polls it (`done()`), ends it early (`cancel()`) and
    reads its outcome (`result()`); a handle is used from one thread."""

    #: What a later driver gives `AttachableLauncher.attach()` to find this job again; None for a job that
    #: ends with its driver.
    external_id: str | None = None
    #: A page that shows the job (e.g. the Databricks run page), or None.
    external_url: str | None = None
    #: Seconds `wait()` sleeps between two looks at `done()`.
    poll_s: ClassVar[float] = 0.05

    @abc.abstractmethod
    def done(self) -> bool:
        """True once the job has ended and its result can be read. Never blocks for long: the driver calls it in
        its poll loop, and each call is where the handle moves on (reads the job's state, escalates a cancel)."""

    def wait(self, timeout: float | None = None) -> bool:
        """Block until `done()` (True), or until `timeout` seconds have passed (False); None waits for ever."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(self.poll_s)
        return True

    @abc.abstractmethod
    def result(self) -> JobReturn:
        """The job's Hydra JobReturn, once it has ended (waits until then); the same object on every call. Never
        raises for the job's own failure: a job that failed, crashed, was killed, cancelled or never started
        gives status FAILED with the error (an exception) as its return value."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Ask the job to stop and return at once (`done()` or `wait()` then see it end; its result is FAILED
        unless it had already ended). Does nothing for a job that has ended; safe to call twice."""


class AsyncLauncher(Launcher, abc.ABC):
    """A Hydra launcher that also starts jobs one at a time. Hydra's batch `launch()` keeps working (see
    `run_batch`); an asynchronous sweeper uses `slots`, `submit()` and `wait_any()` instead."""

    #: Seconds `wait_any()` sleeps between two looks at the handles.
    poll_s: ClassVar[float] = 0.05

    @property
    @abc.abstractmethod
    def slots(self) -> int:
        """How many jobs run at once (`submit()` refuses one more). The first use may check the launcher's
        options and resources: bad input raises sweeps.errors.ConfigError."""

    @abc.abstractmethod
    def submit(self, overrides: Sequence[str], job_idx: int, env: Mapping[str, str] | None = None) -> JobHandle:
        """Start job number `job_idx` with Hydra `overrides`, `env` added to its environment; return at once.
        RuntimeError when every slot is busy. A job that cannot start (its config does not compose, the backend
        refuses it) still gets a handle, whose result is FAILED."""

    def wait_any(self, handles: Sequence[JobHandle], timeout: float | None = None) -> list[JobHandle]:
        """Wait until at least one of `handles` is done (or `timeout` seconds); return the done ones."""
        return wait_any(handles, timeout, self.poll_s)

    @abc.abstractmethod
    def close(self) -> None:
        """Cancel the jobs still running and release what the launcher holds; `setup()` calls it first. Safe
        to call twice; the launcher can be used again afterwards."""


class AttachableLauncher(AsyncLauncher):
    """An asynchronous launcher whose jobs outlive their driver (runs on a remote cluster): its handles have an
    `external_id`, with which a later driver attaches to the job again."""

    @abc.abstractmethod
    def attach(self, external_id: str, job_idx: int, env: Mapping[str, str] | None = None) -> JobHandle:
        """A handle on a job submitted earlier (by a driver that stopped), found by its `external_id`; `env` is
        the environment the job gets from this driver (e.g. where its progress goes here). LookupError when
        the job is unknown or not one of this launcher's."""


def wait_any(handles: Sequence[JobHandle], timeout: float | None, poll: float) -> list[JobHandle]:
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
    submit: Callable[[Sequence[str], int, dict[str, str]], JobHandle],
    has_free_slot: Callable[[int], bool],
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    poll: float,
    cancel_wait: float | None = None,
) -> list[JobReturn]:
    """Run every job, starting one whenever `has_free_slot(running)` allows; results in job order. On any
    error or Ctrl-C the running jobs are cancelled (and waited for, up to `cancel_wait` seconds each)."""
    pending = list(enumerate(job_overrides))
    running: dict[JobHandle, int] = {}
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
