"""What one trial's run is sent with, and runs/submit.

Once per session the wheel (built once per source content) and the task function go to the upload dir
(`upload_shared`). Each job then gets a folder of its own there, with its composed config and `job.json`
(`write_job`: what `_remote` reads on the cluster), and is submitted as a one-time run of the wheel's
`sweeps databricks run-trial`, with an idempotency token (`submit_run`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.types import HydraContext
from omegaconf import DictConfig, open_dict

from sweeps import channel

from . import _wheel
from ._checks import Options
from ._payload import dump_config, dump_setup
from ._volume import Volume

log = logging.getLogger(__name__)

# A submit the SDK gave up on (a 500 it does not retry) is sent again, same idempotency token, this long.
SUBMIT_RETRY_S = 120.0
OUTPUT_MAX_BYTES = 5 * 1024 * 1024
PACKAGE = "sweeps"  # the wheel's distribution, whose `sweeps` entry point runs the trial


@dataclass(frozen=True)
class Shared:
    """What every run of a session uses, in the upload dir."""

    wheel: str  # the wheel's path
    base: str  # the folder of the session's jobs
    setup: str  # the task function and resolvers
    sweep: str  # the sweep's name, safe for paths, run names and tags


def compose(hydra_context: HydraContext, config: DictConfig, overrides: Sequence[str], job_idx: int) -> DictConfig:
    """The job's config, as Hydra's launchers compose it."""
    job_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(job_config):
        job_config.hydra.job.id = f"{job_config.hydra.job.name}_{job_idx}"
        job_config.hydra.job.num = job_idx
    return job_config


def upload_shared(
    volume: Volume,
    opts: Options,
    config: DictConfig,
    task_function: Callable[..., Any],
    session_id: str,
    env: Mapping[str, str],
) -> Shared:
    """The wheel (uploaded unless the same file is there) and the task function, on the volume."""
    if opts.wheel:
        wheel = Path(opts.wheel)
    else:
        root = _wheel.project_root()
        assert root is not None
        wheel = _wheel.build(root, _outputs_dir(config) / "cache" / "wheels")
    wheel_path = f"{opts.upload_dir}/wheels/{_wheel.file_digest(wheel)}/{wheel.name}"
    if volume.size(wheel_path) != wheel.stat().st_size:
        log.info(f"Uploading {wheel.name} to {wheel_path}")
        volume.write_bytes(wheel_path, wheel.read_bytes())
    sweep = _safe(channel.study_name(env) or str(config.hydra.job.name))
    stamp = _safe(Path(str(config.hydra.sweep.dir)).name)
    base = f"{opts.upload_dir}/runs/{sweep}/{stamp}-{session_id[:8]}"
    setup = f"{base}/setup.pkl"
    volume.write_bytes(setup, dump_setup(task_function))
    return Shared(wheel=wheel_path, base=base, setup=setup, sweep=sweep)


def write_job(
    volume: Volume,
    config: DictConfig,
    job_idx: int,
    overrides: Sequence[str],
    env: Mapping[str, str],
    shared: Shared,
    opts: Options,
    tracking_uri: str | None,
    facts: Mapping[str, Any],
) -> tuple[dict[str, Any], str]:
    """The job's own folder in the upload dir, with its composed `config` and its `job.json`; returns the job
    and the path of its job.json."""
    trial_dir = f"{shared.base}/{job_idx}-{uuid.uuid4().hex[:8]}"
    job = _job_spec(job_idx, overrides, env, trial_dir, shared, opts, tracking_uri, facts)
    volume.write_bytes(job["config"], dump_config(config).encode())
    job_path = f"{trial_dir}/job.json"
    volume.write_bytes(job_path, json.dumps(job, indent=1).encode())
    return job, job_path


def _job_spec(
    job_idx: int,
    overrides: Sequence[str],
    env: Mapping[str, str],
    trial_dir: str,
    shared: Shared,
    opts: Options,
    tracking_uri: str | None,
    facts: Mapping[str, Any],
) -> dict[str, Any]:
    """The job as `job.json` holds it: what to run, with which environment, and where each file goes."""
    job_env = channel.remote_env(env)
    if tracking_uri:
        job_env.setdefault("MLFLOW_TRACKING_URI", tracking_uri)
    return {
        "idx": job_idx,
        "overrides": list(overrides),
        "env": job_env,
        "setup": shared.setup,
        "config": f"{trial_dir}/config.yaml",
        "progress": f"{trial_dir}/progress.jsonl",
        "progress_interval": opts.progress_interval,
        "result": f"{trial_dir}/result.pkl",
        "outputs": f"{trial_dir}/output",
        "run_info": f"{trial_dir}/run.json",
        "output_max_bytes": OUTPUT_MAX_BYTES,
        "distributed": _distributed_spec(opts, facts),
    }


def _distributed_spec(opts: Options, facts: Mapping[str, Any]) -> dict[str, Any] | None:
    if not opts.distributed:
        return None
    gpus, workers = int(facts.get("gpus") or 0), int(facts.get("workers") or 0)
    return {"num_processes": workers * gpus if gpus else workers, "use_gpu": gpus > 0}


def submit_run(client: Any, opts: Options, session_id: str, job_idx: int, job_path: str, shared: Shared) -> int:
    """runs/submit with an idempotency token (one per session and job); a failure the SDK does not retry is
    sent again with the same token (the workspace starts one run per token). Returns the run id."""
    from databricks.sdk.errors import InternalError, TemporarilyUnavailable
    from databricks.sdk.service.compute import ClusterSpec, Library
    from databricks.sdk.service.jobs import PythonWheelTask, SubmitTask

    libraries = [Library(whl=shared.wheel), *(Library.from_dict(lib) for lib in opts.libraries)]
    task = SubmitTask(
        task_key="trial",
        python_wheel_task=PythonWheelTask(
            package_name=PACKAGE,
            entry_point=PACKAGE,
            parameters=["databricks", "run-trial", "--job", job_path, "--run-id", "{{job.run_id}}"],
        ),
        libraries=libraries,
        timeout_seconds=opts.timeout,
    )
    if opts.existing_cluster_id:
        task.existing_cluster_id = opts.existing_cluster_id
    else:
        spec = dict(opts.new_cluster or {})
        spec["custom_tags"] = {**(spec.get("custom_tags") or {}), "sweeps-sweep": shared.sweep[:256]}
        task.new_cluster = ClusterSpec.from_dict(spec)
    token = f"sweeps-{session_id[:32]}-{job_idx}"
    deadline = time.monotonic() + SUBMIT_RETRY_S
    while True:
        try:
            waiter = client.jobs.submit(
                run_name=f"sweeps/{shared.sweep}/{job_idx}",
                tasks=[task],
                idempotency_token=token,
                timeout_seconds=opts.timeout,
            )
            return int(waiter.response.run_id)
        except (InternalError, TemporarilyUnavailable) as e:
            if time.monotonic() >= deadline:
                raise
            log.warning(f"Job #{job_idx}: runs/submit failed ({e}); sending it again, same token")
            time.sleep(2.0)


def _outputs_dir(config: DictConfig) -> Path:
    if os.environ.get("SWEEPS_OUTPUTS"):
        return Path(os.environ["SWEEPS_OUTPUTS"]).resolve()
    return Path(str(config.hydra.runtime.cwd)) / "outputs"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_") or "sweep"
