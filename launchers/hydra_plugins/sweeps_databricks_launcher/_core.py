"""The session with the workspace, runs and their handles, and the batch `launch()`.

A session checks everything first (`_checks`: nothing is submitted on bad input), uploads the project's
wheel once, and submits each job as a one-time run (`_submit`). Handles poll runs/get, copy the trial's
progress lines from the upload dir into the sweeper's local progress file, and read the job's result from
the upload dir when the run ends.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cloudpickle
from hydra.core.utils import JobReturn, JobStatus, filter_overrides

from sweeps import channel
from sweeps.launching import JobHandle

from . import _submit
from ._checks import CHECK_HTTP_TIMEOUT_S, checked, client_for, connect
from ._volume import Volume
from .databricks_launcher import DatabricksLauncher

log = logging.getLogger(__name__)

# Retry window of runs/cancel (Ctrl-C, close): long enough for throttling, short enough for a dead host.
CANCEL_RETRY_S = 30
# Runs that are still going this long after their `timeout` are cancelled by the driver.
TIMEOUT_GRACE_S = 300.0
WAIT_SLEEP_S = DatabricksLauncher.poll_s
TERMINAL = ("TERMINATED", "INTERNAL_ERROR", "SKIPPED")


# ---------------------------------------------------------------- runs
def _state(run: Any) -> tuple[str, str | None, str]:
    state = run.state
    life = state.life_cycle_state.value if state and state.life_cycle_state else "PENDING"
    result = state.result_state.value if state and state.result_state else None
    message = (state.state_message if state else "") or ""
    details = run.status.termination_details if run.status is not None else None
    if not message and details is not None and details.message:
        message = details.message
    return life, result, message


def failed_return(overrides: Sequence[str], error: BaseException) -> JobReturn:
    ret = JobReturn(overrides=list(filter_overrides(overrides)), status=JobStatus.FAILED)
    ret.return_value = error
    return ret


class RunHandle(JobHandle):
    """One job as a Databricks run. `run_id`, `run_page_url`, `external_id` (str(run_id)) and `external_url`
    name the run."""

    poll_s = WAIT_SLEEP_S

    def __init__(
        self,
        session: Session,
        job_idx: int,
        overrides: Sequence[str],
        env: Mapping[str, str],
        job: dict[str, Any] | None = None,
    ) -> None:
        self.session = session
        self.job_idx = job_idx
        self.overrides = list(overrides)
        self.env = dict(env)
        self.job = job or {}
        self.run_id: int | None = None
        self.task_run_id: int | None = None
        self.run_page_url: str | None = None
        self.life_cycle_state = "PENDING"
        self.result_state: str | None = None
        self.state_message = ""
        self.started = time.time()
        self.cancelled = False
        self.cancel_sent = False
        self.traceback: str | None = None
        self.mlflow_run_id: str | None = None
        self._final = False
        self._last_poll = 0.0
        self._progress_sent = 0
        self._result: JobReturn | None = None

    @property  # type: ignore[override]
    def external_id(self) -> str | None:
        return None if self.run_id is None else str(self.run_id)

    @property  # type: ignore[override]
    def external_url(self) -> str | None:
        return self.run_page_url

    def done(self) -> bool:
        if not self._final:
            self.session.refresh(self)
        return self._final

    def result(self) -> JobReturn:
        """The job's JobReturn; a run that failed, was cancelled or timed out gives FAILED with the reason."""
        self.wait()
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        """runs/cancel; the handle is done once the run is stopping."""
        if self._final or self.cancelled:
            return
        self.cancelled = True
        if self.run_id is not None:
            self.session.cancel(self)

    def fail(self, error: BaseException) -> None:
        self._result = failed_return(self.overrides, error)
        self._final = True

    def __repr__(self) -> str:
        return f"RunHandle(job #{self.job_idx}, run {self.run_id}, {self.life_cycle_state})"


class Session:
    """The checked options, the workspace client and the runs of one launcher."""

    def __init__(self, launcher: DatabricksLauncher) -> None:
        assert launcher.config is not None and launcher.hydra_context is not None
        assert launcher.task_function is not None
        self.launcher = launcher
        self.config = launcher.config
        self.opts, self.tracking_uri = checked(launcher)
        self.client, self.facts = connect(self.opts)
        self.canceller = client_for(self.opts.profile, CANCEL_RETRY_S, CHECK_HTTP_TIMEOUT_S)
        self.volume = Volume(self.client)
        self.id = uuid.uuid4().hex
        self.handles: list[RunHandle] = []
        self._shared_upload: _submit.Shared | None = None
        self._finalizer = weakref.finalize(self, _cancel_all, self.handles)
        log.info(
            f"Databricks workspace {self.facts['host']} as {self.facts['user']}; upload dir {self.opts.upload_dir}"
        )

    @property
    def slots(self) -> int:
        return self.opts.slots

    def active(self) -> list[RunHandle]:
        return [h for h in self.handles if not h._final]

    # ------------------------------------------------------------ submit
    def submit(self, overrides: Sequence[str], job_idx: int, env: Mapping[str, str]) -> RunHandle:
        if len([h for h in self.active() if not h.done()]) >= self.slots:
            raise RuntimeError(f"all {self.slots} slots are busy; wait for a run to finish first")
        handle = RunHandle(self, job_idx, overrides, env)
        self.handles.append(handle)
        assert self.launcher.hydra_context is not None
        try:
            config = _submit.compose(self.launcher.hydra_context, self.config, overrides, job_idx)
        except Exception as e:
            handle.fail(e)
            return handle
        shared = self._shared(env)
        handle.job, job_path = _submit.write_job(
            self.volume, config, job_idx, overrides, env, shared, self.opts, self.tracking_uri, self.facts
        )
        try:
            handle.run_id = _submit.submit_run(self.client, self.opts, self.id, job_idx, job_path, shared)
        except Exception as e:
            from databricks.sdk.errors import DatabricksError

            if not isinstance(e, DatabricksError):
                raise
            handle.fail(RuntimeError(f"the workspace refused the run of job #{job_idx}: {e}"))
            log.warning(f"Job #{job_idx}: runs/submit refused: {e}")
            return handle
        self.refresh(handle, force=True)
        self.volume.write_bytes(
            handle.job["run_info"], json.dumps({"run_id": handle.run_id, "run_page_url": handle.run_page_url}).encode()
        )
        log.info(f"Job #{job_idx}: Databricks run {handle.run_id} {handle.run_page_url or ''}".rstrip())
        return handle

    def _shared(self, env: Mapping[str, str]) -> _submit.Shared:
        """Once per session: the wheel and the task function on the volume."""
        if self._shared_upload is None:
            assert self.launcher.task_function is not None
            self._shared_upload = _submit.upload_shared(
                self.volume, self.opts, self.config, self.launcher.task_function, self.id, env
            )
        return self._shared_upload

    # ------------------------------------------------------------ attach
    def attach(self, run_id: Any, job_idx: int, env: Mapping[str, str]) -> RunHandle:
        """A handle on a run of an earlier driver, found by its run id; its job comes from the upload dir."""
        from databricks.sdk.errors import InvalidParameterValue, NotFound

        try:
            run = self.client.jobs.get_run(int(run_id))
        except (NotFound, InvalidParameterValue, ValueError) as e:
            raise LookupError(f"Databricks run {run_id} is unknown to the workspace ({e})") from None
        task = (run.tasks or [None])[0]
        parameters = list(task.python_wheel_task.parameters or []) if task and task.python_wheel_task else []
        if "--job" not in parameters:
            raise LookupError(f"Databricks run {run_id} is not a run of this launcher")
        job_path = parameters[parameters.index("--job") + 1]
        data = self.volume.read_bytes(job_path)
        if data is None:
            raise LookupError(f"Databricks run {run_id}: its job file {job_path} is gone from the upload dir")
        job = json.loads(data)
        handle = RunHandle(self, job_idx, job["overrides"], env, job)
        handle.run_id = int(run_id)
        local = channel.progress_file(env)
        if local is not None and local.is_file():  # the lines an earlier driver copied there already
            handle._progress_sent = local.stat().st_size
        self.handles.append(handle)
        self._update(handle, run)
        log.info(f"Job #{job_idx}: attached to Databricks run {run_id} ({handle.life_cycle_state})")
        return handle

    # ------------------------------------------------------------ polling
    def refresh(self, handle: RunHandle, force: bool = False) -> None:
        """Look at the run (at most every poll_interval): state, new progress lines, result once it ended."""
        now = time.monotonic()
        if handle._final or handle.run_id is None or (not force and now - handle._last_poll < self.opts.poll_interval):
            return
        handle._last_poll = now
        try:
            run = self.client.jobs.get_run(handle.run_id)
        except Exception as e:  # the next poll tries again; the SDK has retried what it retries
            log.warning(f"Job #{handle.job_idx}: runs/get {handle.run_id} failed: {e}")
            return
        self._update(handle, run)

    def _update(self, handle: RunHandle, run: Any) -> None:
        handle.life_cycle_state, handle.result_state, handle.state_message = _state(run)
        handle.run_page_url = run.run_page_url or handle.run_page_url
        if run.tasks:
            handle.task_run_id = run.tasks[0].run_id
        self._sync_progress(handle)
        stopping = handle.cancelled and handle.life_cycle_state == "TERMINATING"
        if handle.life_cycle_state in TERMINAL or stopping:
            self._finish(handle)
            return
        timeout = self.opts.timeout
        if timeout and time.time() - handle.started > timeout + TIMEOUT_GRACE_S and not handle.cancelled:
            log.warning(f"Job #{handle.job_idx}: run {handle.run_id} is still going after {timeout} s; cancelling it")
            handle.cancel()

    def _sync_progress(self, handle: RunHandle) -> None:
        """Append the progress lines the trial uploaded since the last look to the sweeper's local file."""
        local = channel.progress_file(handle.env)
        remote = handle.job.get("progress")
        if local is None or not remote:
            return
        try:
            size = self.volume.size(remote)
            if size is None or size <= handle._progress_sent:
                return
            data = self.volume.read_bytes(remote) or b""
        except Exception as e:
            log.warning(f"Job #{handle.job_idx}: reading its progress failed: {e}")
            return
        end = data.rfind(b"\n") + 1
        if end <= handle._progress_sent:
            return
        local.parent.mkdir(parents=True, exist_ok=True)
        with open(local, "ab") as f:
            f.write(data[handle._progress_sent : end])
        handle._progress_sent = end

    def _finish(self, handle: RunHandle) -> None:
        record = None
        try:
            data = self.volume.read_bytes(handle.job["result"]) if handle.job.get("result") else None
            record = cloudpickle.loads(data) if data else None
        except Exception as e:
            log.warning(f"Job #{handle.job_idx}: its result file could not be read: {e}")
        if record is not None and not handle.cancelled:
            ret: JobReturn = record["ret"]
            handle.traceback = record.get("traceback")
            if handle.traceback:
                log.warning(
                    f"Job #{handle.job_idx} failed on Databricks run {handle.run_id}:\n{_tail(handle.traceback, 40)}"
                )
            handle.mlflow_run_id = record.get("mlflow_run_id")
            self._fetch_outputs(handle, ret, record.get("outputs") or [])
            handle._result = ret
        else:
            handle._result = failed_return(handle.overrides, RuntimeError(self._failure(handle)))
        handle._final = True

    def _failure(self, handle: RunHandle) -> str:
        if handle.cancelled:
            return f"job #{handle.job_idx} was cancelled (Databricks run {handle.run_id})"
        state = "/".join(s for s in (handle.life_cycle_state, handle.result_state) if s)
        message = handle.state_message or "no state message"
        error = self._run_error(handle)
        if error and error not in message:
            message = f"{message}; {error}"
        where = f" ({handle.run_page_url})" if handle.run_page_url else ""
        return f"Databricks run {handle.run_id} {state}: {message}{where}"

    def _run_error(self, handle: RunHandle) -> str | None:
        """The error runs/get-output reports for the task run, when it ran at all."""
        if handle.task_run_id is None or handle.life_cycle_state == "INTERNAL_ERROR":
            return None
        try:
            output = self.client.jobs.get_run_output(handle.task_run_id)
        except Exception:
            return None
        if output.error_trace:
            log.warning(f"Job #{handle.job_idx}: the run's error trace:\n{_tail(output.error_trace, 30)}")
        return output.error

    def _fetch_outputs(self, handle: RunHandle, ret: JobReturn, outputs: list[str]) -> None:
        """The job's .hydra folder and logs, copied to the job's dir here; working_dir names this machine's."""
        if ret.hydra_cfg is None:
            return
        remote_dir = str(ret.hydra_cfg.hydra.runtime.output_dir)
        local_dir = Path(remote_dir)
        for relative in outputs:
            try:
                data = self.volume.read_bytes(f"{handle.job['outputs']}/{relative}")
            except Exception as e:
                log.warning(f"Job #{handle.job_idx}: could not fetch {relative}: {e}")
                continue
            if data is not None:
                (local_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                (local_dir / relative).write_bytes(data)
        if ret.working_dir != remote_dir:
            ret.working_dir = str(ret.hydra_cfg.hydra.runtime.cwd)
        else:
            local_dir.mkdir(parents=True, exist_ok=True)

    def cancel(self, handle: RunHandle) -> None:
        """runs/cancel unless the run has ended; retried for at most CANCEL_RETRY_S (a driver that stops must
        not hang on it)."""
        try:
            run = self.canceller.jobs.get_run(handle.run_id)
            if _state(run)[0] in TERMINAL:
                self._update(handle, run)
                return
            self.canceller.jobs.cancel_run(handle.run_id)
            handle.cancel_sent = True
            log.info(f"Job #{handle.job_idx}: cancelling Databricks run {handle.run_id}")
        except Exception as e:  # it ended meanwhile, or the workspace is out of reach
            log.warning(f"Job #{handle.job_idx}: runs/cancel {handle.run_id} failed: {e}")
        handle._last_poll = 0.0

    def close(self) -> None:
        self._finalizer()


def _cancel_all(handles: list[RunHandle]) -> None:
    """Cancel the runs still going and wait until each is stopping (at most a minute)."""
    going = [h for h in handles if not h._final and h.run_id is not None]
    for handle in going:
        handle.cancel()
    deadline = time.monotonic() + 60
    for handle in going:
        if handle.cancel_sent:
            handle.wait(timeout=max(0.0, deadline - time.monotonic()))


def _tail(text: str, lines: int) -> str:
    from sweeps.secrets import mask_text

    return mask_text("\n".join(text.strip().splitlines()[-lines:]))


def launch(
    launcher: DatabricksLauncher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> Sequence[JobReturn]:
    """Hydra's batch API: run all jobs, at most n_jobs at a time, and return their results in order."""
    from sweeps.errors import exit_on_config_error
    from sweeps.launching import log_batch, run_batch, start_batch

    assert launcher.config is not None
    sweep_dir = start_batch(launcher.config)
    with exit_on_config_error():
        session = launcher.session()
    log_batch(log, f"on Databricks, {session.slots} at a time", sweep_dir, job_overrides, initial_job_idx)

    return run_batch(
        session.submit,
        lambda running: running < session.slots,
        job_overrides,
        initial_job_idx,
        WAIT_SLEEP_S,
        cancel_wait=60,
    )
