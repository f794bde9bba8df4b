"""Slots, job processes and the batch `launch()` of the local launcher."""

from __future__ import annotations

import glob
import json
import logging
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import cloudpickle
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides

from sweeps.launching import JobHandle, LostJob

from .local_launcher import LocalLauncher

log = logging.getLogger(__name__)

WORKER_MODULE = "hydra_plugins.sweeps_local_launcher._worker"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
POLL_S = LocalLauncher.poll_s
# A slot starts its next process this long after its job started, not to slow the job's own start-up.
PRESTART_DELAY_S = 1.0
WORKDIR_PREFIX = "sweeps_local_"


def visible_gpus() -> list[str]:
    """GPU ids a job may use: CUDA_VISIBLE_DEVICES when set, else torch's count when torch is already
    imported, else the /dev/nvidiaN devices (so the driver never imports torch for this)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = []
        for dev in (d.strip() for d in env.split(",")):
            if not dev or dev == "-1":
                break
            ids.append(dev)
        return ids
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            return [str(i) for i in range(torch.cuda.device_count())]
        except Exception:
            return []
    devices = [p for p in glob.glob("/dev/nvidia*") if re.fullmatch(r"/dev/nvidia\d+", p)]
    return [str(i) for i in range(len(devices))]


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def slot_envs(n_jobs: int | None, gpus_per_job: int, threads_per_job: int | None) -> list[dict[str, str]]:
    """The environment each slot adds to its jobs (GPU ids, CPU thread counts)."""
    from sweeps.errors import ConfigError

    gpus = visible_gpus() if gpus_per_job > 0 else []
    if gpus_per_job < 0:
        raise ConfigError(f"hydra.launcher.gpus_per_job={gpus_per_job}: must be 0 or more")
    groups = [gpus[i : i + gpus_per_job] for i in range(0, len(gpus) - gpus_per_job + 1, gpus_per_job)]
    if gpus and not groups:
        raise ConfigError(
            f"hydra.launcher.gpus_per_job={gpus_per_job}: only {len(gpus)} GPUs are visible "
            f"({','.join(gpus)}); set it to {len(gpus)} or less"
        )
    n = n_jobs if n_jobs is not None else max(1, len(groups))
    if n < 1:
        raise ConfigError(f"hydra.launcher.n_jobs={n_jobs}: must be 1 or more (or null: one per GPU)")
    if threads_per_job is not None and threads_per_job < 1:
        raise ConfigError(f"hydra.launcher.threads_per_job={threads_per_job}: must be 1 or more (or null)")
    threads = threads_per_job or max(1, usable_cores() // n)
    envs = []
    for i in range(n):
        env = {var: str(threads) for var in THREAD_VARS if var not in os.environ}
        if groups:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(groups[i % len(groups)])
        envs.append(env)
    return envs


def failed_return(overrides: Sequence[str], error: BaseException) -> JobReturn:
    ret = JobReturn(overrides=list(filter_overrides(overrides)), status=JobStatus.FAILED)
    ret.return_value = error
    return ret


class ProcessHandle(JobHandle):
    """One job running in its own process group."""

    poll_s = POLL_S

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        job_idx: int,
        overrides: Sequence[str],
        result_path: Path,
        slot: Slot,
        grace_s: float,
    ) -> None:
        self.proc = proc
        self.job_idx = job_idx
        self.overrides = list(overrides)
        self.slot = slot
        self.started = time.time()
        self.ended: float | None = None
        self.cancelled = False
        self.traceback: str | None = None
        self._result_path = result_path
        self._grace_s = grace_s
        self._kill_at: float | None = None
        self._result: JobReturn | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def gpus(self) -> str | None:
        return self.slot.env.get("CUDA_VISIBLE_DEVICES")

    def done(self) -> bool:
        """True once the job's process has exited or, on a slot without GPUs, once its result is
        written (the process then exits in the background; a GPU slot waits for its memory)."""
        if self.ended is not None:
            return True
        self.slot.reap()
        if self.proc.poll() is None:
            if self._kill_at is not None and time.monotonic() >= self._kill_at:
                self._signal(signal.SIGKILL)
                self._kill_at = None
            elif not self.cancelled and not self.gpus and self._result_path.exists():
                self.ended = time.time()
                self.slot.release(self, exiting=True)
                return True
            elif time.time() - self.started >= PRESTART_DELAY_S:
                self.slot.prestart()
            return False
        self.ended = time.time()
        self.slot.release(self)
        return True

    def result(self) -> JobReturn:
        """The job's JobReturn; a crashed, killed or cancelled job gives status FAILED with the error."""
        self.wait()
        if self._result is None:
            self._result = self._load_result()
        return self._result

    def cancel(self) -> None:
        """SIGTERM to the job's process group, SIGKILL after the grace period (checked by done())."""
        if self.done() or self.cancelled:
            return
        self.cancelled = True
        self._signal(signal.SIGTERM)
        self._kill_at = time.monotonic() + self._grace_s

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _load_result(self) -> JobReturn:
        rc = self.proc.returncode
        if self._result_path.exists():
            try:
                with open(self._result_path, "rb") as f:
                    data = pickle.load(f)
                self.traceback = data.get("traceback")
                ret = data["ret"]
                assert isinstance(ret, JobReturn)
                return ret
            except Exception as e:
                return failed_return(self.overrides, RuntimeError(f"job result could not be read: {e!r}"))
            finally:
                self._result_path.unlink(missing_ok=True)
        if self.cancelled:
            error = RuntimeError(f"job #{self.job_idx} was cancelled")
        elif rc is not None and rc < 0:
            name = signal.Signals(-rc).name
            hint = " (out of memory?)" if -rc == signal.SIGKILL else ""
            error = LostJob(f"job process was killed by {name}{hint}")
        else:
            error = RuntimeError(f"job process exited with status {rc} before returning a result")
        return failed_return(self.overrides, error)


@dataclass
class Slot:
    """Runs one job at a time with its own environment; keeps its next process warm."""

    index: int
    env: dict[str, str]
    warm: bool = True
    setup: Path | None = None
    job: ProcessHandle | None = None
    spare: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    exiting: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    @property
    def free(self) -> bool:
        return self.job is None or self.job.done()

    def release(self, job: ProcessHandle, exiting: bool = False) -> None:
        if self.job is job:
            self.job = None
        if exiting:
            self.exiting.append(job.proc)

    def reap(self) -> None:
        self.exiting = [p for p in self.exiting if p.poll() is None]

    def prestart(self) -> None:
        """Start the process for this slot's next job, so it is ready (imports done) when needed."""
        if self.warm and self.spare is None and self.setup is not None:
            self.spare = _spawn(self.env, self.setup)

    def process(self) -> subprocess.Popen[bytes]:
        """The warm process, or a fresh one."""
        assert self.setup is not None
        proc, self.spare = self.spare, None
        if proc is not None and proc.poll() is None:
            return proc
        return _spawn(self.env, self.setup)


def _spawn(env: Mapping[str, str], setup: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", WORKER_MODULE, "--parent", str(os.getpid()), "--setup", str(setup)],
        stdin=subprocess.PIPE,
        env={**os.environ, **env},
        start_new_session=True,
    )


def _stop_spare(proc: subprocess.Popen[bytes]) -> None:
    stdin: IO[bytes] | None = proc.stdin
    if stdin is not None:
        try:
            stdin.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _remove_orphaned_workdirs() -> None:
    """Working folders of drivers that were killed (kill -9 leaves no chance to clean up)."""
    for path in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*_*"):
        pid = path.name[len(WORKDIR_PREFIX) :].split("_")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass


def _close(slots: list[Slot], workdir: str, grace_s: float) -> None:
    jobs = [s.job for s in slots if s.job is not None]
    for job in jobs:
        job.cancel()
    for job in jobs:
        job.wait()
    for slot in slots:
        if slot.spare is not None:
            _stop_spare(slot.spare)
            slot.spare = None
        for proc in slot.exiting:
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        slot.exiting.clear()
    shutil.rmtree(workdir, ignore_errors=True)


class SlotPool:
    """The slots of one launcher and the processes they run."""

    def __init__(self, launcher: LocalLauncher) -> None:
        self.launcher = launcher
        envs = slot_envs(launcher.n_jobs, launcher.gpus_per_job, launcher.threads_per_job)
        self.slots = [Slot(i, env, launcher.prestart) for i, env in enumerate(envs)]
        _remove_orphaned_workdirs()
        self.workdir = tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}_")
        self._setup: Path | None = None
        self._finalizer = weakref.finalize(self, _close, self.slots, self.workdir, launcher.cancel_grace_s)

    @property
    def n_slots(self) -> int:
        return len(self.slots)

    def free_slots(self) -> int:
        return sum(slot.free for slot in self.slots)

    def running(self) -> list[ProcessHandle]:
        return [s.job for s in self.slots if s.job is not None and not s.job.done()]

    def submit(self, overrides: Sequence[str], job_idx: int, env: Mapping[str, str]) -> ProcessHandle:
        launcher = self.launcher
        assert launcher.config is not None and launcher.hydra_context is not None
        assert launcher.task_function is not None
        slot = next((s for s in self.slots if s.free), None)
        if slot is None:
            raise RuntimeError(f"all {self.n_slots} slots are busy; wait for a job to finish first")
        if self._setup is None:
            self._setup = self._write_setup()
            for s in self.slots:
                s.setup = self._setup
                s.prestart()

        result_path = Path(self.workdir) / f"job_{job_idx}_{time.monotonic_ns()}.out"
        request = {"idx": job_idx, "overrides": list(overrides), "env": dict(env), "result": str(result_path)}
        proc = self._start(slot, (json.dumps(request) + "\n").encode())
        handle = ProcessHandle(proc, job_idx, overrides, result_path, slot, launcher.cancel_grace_s)
        slot.job = handle
        return handle

    def _write_setup(self) -> Path:
        """What every job of this launcher shares: task function, config, Hydra context and state."""
        launcher = self.launcher
        setup = {
            "hydra_context": launcher.hydra_context,
            "config": launcher.config,
            "task_function": launcher.task_function,
            "singleton_state": Singleton.get_state(),
        }
        path = Path(self.workdir) / "setup.pkl"
        with open(path, "wb") as f:
            pickle.dump(list(sys.path), f)
            cloudpickle.dump(setup, f)
        return path

    def _start(self, slot: Slot, request: bytes) -> subprocess.Popen[bytes]:
        """Hand the job to the slot's warm process (or a fresh one when it has none or it died)."""
        for _ in range(2):
            proc = slot.process()
            try:
                assert proc.stdin is not None
                proc.stdin.write(request)
                proc.stdin.close()
                return proc
            except (BrokenPipeError, OSError):
                proc.kill()
                proc.wait()
        raise RuntimeError("could not start a job process")

    def close(self) -> None:
        self._finalizer()


def launch(
    launcher: LocalLauncher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> Sequence[JobReturn]:
    """Hydra's batch API: run all jobs, at most one per slot at a time, return results in order."""
    from sweeps.errors import exit_on_config_error
    from sweeps.launching import log_batch, run_batch, start_batch

    assert launcher.config is not None
    sweep_dir = start_batch(launcher.config)
    with exit_on_config_error():
        pool = launcher.pool()
    log_batch(log, f"locally on {pool.n_slots} slots", sweep_dir, job_overrides, initial_job_idx)

    return run_batch(pool.submit, lambda running: bool(pool.free_slots()), job_overrides, initial_job_idx, POLL_S)
