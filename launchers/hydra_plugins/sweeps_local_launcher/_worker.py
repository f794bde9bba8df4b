"""Job process of the local launcher.

Started as `python -m hydra_plugins.sweeps_local_launcher._worker --parent PID --setup PATH`. The setup
file holds the driver's sys.path and, cloudpickled, the task function, config, HydraContext and Hydra's
singleton state, the same for every job of a launcher. The process loads it and restores Hydra's state
ahead of time, then waits for one line on stdin: {"idx", "overrides", "env", "result"}. The job runs
through Hydra's `run_job`; the pickled JobReturn (plus the formatted traceback of a failure) is written
to the result path. SIGTERM (cancel) and the driver's death end the job with KeyboardInterrupt, so
context managers in the task close cleanly.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import cloudpickle
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import open_dict

from sweeps.launching import failure_text, pickled_result

EXIT_CANCELLED = 128 + signal.SIGTERM


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt("job cancelled (SIGTERM)")


def _follow_parent(parent: int) -> None:
    """Get SIGTERM when the driver dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        except (OSError, AttributeError):
            _watch_parent(parent)
    else:
        _watch_parent(parent)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def _watch_parent(parent: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def load_setup(path: str) -> dict[str, Any]:
    """Read the launcher's setup file and restore Hydra's global state from it."""
    with open(path, "rb") as f:
        sys.path.extend(p for p in pickle.load(f) if p not in sys.path)
        setup: dict[str, Any] = cloudpickle.load(f)
    setup_globals()
    Singleton.set_state(setup["singleton_state"])
    config = setup["config"]
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    try:  # compose once while idle: the parsers' caches are then warm when the job arrives
        setup["hydra_context"].config_loader.load_sweep_config(config, [])
    except Exception:
        pass
    return setup


def execute(setup: dict[str, Any], idx: int, overrides: Sequence[str]) -> JobReturn:
    """Compose the job's config and run it, as hydra_joblib_launcher does."""
    hydra_context = setup["hydra_context"]
    try:
        sweep_config = hydra_context.config_loader.load_sweep_config(setup["config"], list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
            sweep_config.hydra.job.num = idx
        HydraConfig.instance().set_config(sweep_config)
    except Exception as e:
        ret = JobReturn(overrides=list(filter_overrides(overrides)), status=JobStatus.FAILED)
        ret.return_value = e
        return ret
    return run_job(
        hydra_context=hydra_context,
        task_function=setup["task_function"],
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def main(argv: list[str]) -> int:
    parent = int(argv[argv.index("--parent") + 1])
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        _follow_parent(parent)
        setup = load_setup(argv[argv.index("--setup") + 1])
        line = sys.stdin.readline()
        if not line.strip():
            return 0
        job = json.loads(line)
        os.environ.update(job["env"])
        ret = execute(setup, job["idx"], job["overrides"])
        tb = failure_text(ret)
        if tb is not None:
            sys.stderr.write(f"[sweeps_local] job #{job['idx']} failed:\n{tb}")
        data = pickled_result(ret, tb)
        tmp = job["result"] + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, job["result"])
        return 0
    except KeyboardInterrupt:
        return EXIT_CANCELLED


if __name__ == "__main__":
    sys.exit(main(sys.argv))
