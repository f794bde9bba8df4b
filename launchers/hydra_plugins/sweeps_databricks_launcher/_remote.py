"""The trial on the cluster: `sweeps databricks run-trial --job <volume path> --run-id <id>`.

The run's python wheel task calls the wheel's `sweeps` entry point with these arguments. The runner reads
the job from the upload dir, runs it through Hydra's `run_job` (its task on every node with TorchDistributor
when the job asks for it), copies the trial's progress file to the volume while it runs, then writes the
job's small outputs and its pickled JobReturn there. It exits 1 when the task failed, so the run fails too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

from sweeps import channel
from sweeps.compose import load_job_config
from sweeps.launching import failure_text, pickled_result

from ._payload import load_setup
from ._volume import Volume

log = logging.getLogger(__name__)

EXIT_CANCELLED = 128 + signal.SIGTERM


class Mirror:
    """Copies a local file that the trial appends to onto the volume, whole, whenever it has grown."""

    def __init__(self, volume: Volume, local: Path, remote: str, interval: float) -> None:
        self.volume = volume
        self.local = local
        self.remote = remote
        self.interval = interval
        self._sent = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sweeps-progress-mirror", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def flush(self) -> None:
        try:
            data = self.local.read_bytes()
        except FileNotFoundError:
            return
        if len(data) == self._sent:
            return
        try:
            self.volume.write_bytes(self.remote, data)
            self._sent = len(data)
        except Exception as e:  # the next flush tries again
            log.warning(f"progress upload to {self.remote} failed: {e}")


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt("run cancelled (SIGTERM)")


def _read(volume: Volume, path: str) -> bytes:
    data = volume.read_bytes(path)
    if data is None:
        raise FileNotFoundError(f"{path} is missing from the upload dir")
    return data


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sweeps databricks run-trial")
    parser.add_argument("--job", required=True, help="the job's job.json in the upload dir")
    parser.add_argument("--run-id", default="", help="the Databricks run id ({{job.run_id}})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)

    volume = Volume.on_cluster(args.job)
    job = json.loads(_read(volume, args.job))
    task_function = load_setup(_read(volume, job["setup"]))
    config = load_job_config(_read(volume, job["config"]).decode())
    os.environ.update(job["env"])
    channel.set_databricks_run_id(args.run_id)
    scratch = Path(tempfile.mkdtemp(prefix="sweeps_trial_"))
    mirror: Mirror | None = None
    if not job.get("distributed"):  # else rank 0 mirrors its own progress file, on whichever node it runs
        mirror = Mirror(volume, scratch / "progress.jsonl", job["progress"], float(job["progress_interval"]))
        channel.set_progress_file(mirror.local)
        mirror.start()

    started = time.time()
    ret: JobReturn | None = None
    code = 0
    try:
        ret = execute(job, task_function, config)
    except KeyboardInterrupt:
        code = EXIT_CANCELLED
    finally:
        if mirror is not None:
            mirror.stop()
        mlflow_run_id = _tag_mlflow_run(volume, job, args.run_id, started)
    if ret is None:
        return code
    tb = failure_text(ret)
    if tb is not None:
        sys.stderr.write(f"[sweeps_databricks] job #{job['idx']} failed:\n{tb}")
    outputs = _copy_outputs(volume, ret, job)
    volume.write_bytes(job["result"], pickled_result(ret, tb, outputs=outputs, mlflow_run_id=mlflow_run_id))
    return 0 if ret.status == JobStatus.COMPLETED else 1


def execute(job: dict[str, Any], task_function: Callable[..., Any], config: Any) -> JobReturn:
    """Run the job as Hydra's launchers do, in the sweep dir it was given."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.utils import JobRuntime, run_job, setup_globals
    from hydra.types import HydraContext

    setup_globals()
    JobRuntime.instance().set("name", str(config.hydra.job.name))
    if job.get("distributed"):
        task_function = _distributed(job, task_function)
    context = HydraContext(config_loader=None, callbacks=Callbacks(config))  # type: ignore[arg-type]
    return run_job(
        hydra_context=context,
        task_function=task_function,
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def _distributed(job: dict[str, Any], task_function: Callable[..., Any]) -> Callable[..., Any]:
    """The task run by TorchDistributor on every GPU (or every worker) of the cluster; rank 0's value."""
    spec = job["distributed"]
    setup_path, progress, interval = job["setup"], job["progress"], float(job["progress_interval"])
    env = dict(job["env"])

    def run(cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf
        from pyspark.ml.torch.distributor import TorchDistributor
        from pyspark.sql import SparkSession

        SparkSession.builder.getOrCreate()  # a wheel task's Python has no session until it asks for the cluster's
        distributor = TorchDistributor(
            num_processes=int(spec["num_processes"]), local_mode=False, use_gpu=bool(spec["use_gpu"])
        )
        full = OmegaConf.to_yaml(HydraConfig.instance().cfg) if HydraConfig.initialized() else None
        return distributor.run(rank_main, setup_path, OmegaConf.to_yaml(cfg), full, env, progress, interval)

    return run


def rank_main(
    setup_path: str,
    task_yaml: str,
    hydra_yaml: str | None,
    env: dict[str, str],
    progress: str,
    interval: float,
) -> Any:
    """One process of a distributed trial (RANK, WORLD_SIZE, MASTER_ADDR come from torchrun)."""
    from hydra.core.hydra_config import HydraConfig

    os.environ.update(env)
    volume = Volume.on_cluster(setup_path)
    task_function = load_setup(_read(volume, setup_path))
    if hydra_yaml is not None:
        HydraConfig.instance().set_config(load_job_config(hydra_yaml))
    mirror = None
    if int(os.environ.get("RANK", "0")) == 0:
        mirror = Mirror(volume, Path(tempfile.mkdtemp(prefix="sweeps_rank0_")) / "progress.jsonl", progress, interval)
        channel.set_progress_file(mirror.local)
        mirror.start()
    else:
        channel.set_progress_file(None)
    try:
        return task_function(load_job_config(task_yaml))
    finally:
        if mirror is not None:
            mirror.stop()


def _tag_mlflow_run(volume: Volume, job: dict[str, Any], run_id: str, started: float) -> str | None:
    """Tag the MLflow run the task started (if any) with the Databricks run id and page."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return None
    try:
        last = mlflow.last_active_run()
        if last is None or last.info.start_time < (started - 5) * 1000:
            return None
        info = json.loads(volume.read_bytes(job["run_info"]) or b"{}")
        client = mlflow.MlflowClient()
        client.set_tag(last.info.run_id, "databricks.run_id", str(info.get("run_id") or run_id))
        if info.get("run_page_url"):
            client.set_tag(last.info.run_id, "databricks.run_page_url", info["run_page_url"])
        return str(last.info.run_id)
    except Exception as e:
        log.warning(f"could not tag the MLflow run with the Databricks run: {e}")
        return None


def _copy_outputs(volume: Volume, ret: JobReturn, job: dict[str, Any]) -> list[str]:
    """The job's .hydra folder and its top-level small files (logs, metrics) onto the volume."""
    if ret.hydra_cfg is None:
        return []
    output_dir = Path(str(ret.hydra_cfg.hydra.runtime.output_dir))
    subdir = ret.hydra_cfg.hydra.output_subdir
    candidates = [p for p in output_dir.iterdir() if p.is_file()] if output_dir.is_dir() else []
    if subdir is not None and (output_dir / str(subdir)).is_dir():
        candidates += [p for p in (output_dir / str(subdir)).iterdir() if p.is_file()]
    copied = []
    for path in candidates:
        if path.stat().st_size > int(job["output_max_bytes"]):
            continue
        relative = path.relative_to(output_dir).as_posix()
        try:
            volume.write_bytes(f"{job['outputs']}/{relative}", path.read_bytes())
            copied.append(relative)
        except Exception as e:
            log.warning(f"could not copy {path} to the upload dir: {e}")
    return copied
