"""What our Hydra launchers share: waiting for any of several jobs, and Hydra's batch `launch()` on top of an
asynchronous `submit()`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from hydra.core.utils import JobReturn


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
