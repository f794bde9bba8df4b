"""Schema of the `compute` group (conf/compute/); consumed by sweeps.compute.

Where a sweep's trials run is the launcher's business: each compute option selects one (compute=databricks:
hydra/launcher=sweeps_databricks, the others: sweeps_local), whose options are `hydra.launcher.*`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ComputeConfig:
    # Name of the option, for reports (auto, cpu, local_gpus, ...).
    name: str = "auto"
    # auto picks cuda when a GPU is visible, else cpu.
    device: str = "auto"
    # auto: bf16 autocast on GPUs that support it, fp32 elsewhere.
    precision: str = "auto"
    # torch.compile the model (pays off on GPUs for runs longer than a few hundred steps).
    compile: bool = False
    # CPU threads for torch; null keeps torch's default.
    threads: int | None = None
    # Data-parallel processes per run, each on its share of the batches (batch_size is per process): one per
    # GPU of the run (a sweep's launcher gives each trial hydra.launcher.gpus_per_job of them), or CPU workers.
    processes: int = 1
