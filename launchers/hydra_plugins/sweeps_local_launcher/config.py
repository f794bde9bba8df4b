"""Schema of `hydra/launcher=sweeps_local`."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class LocalLauncherConf:
    _target_: str = "hydra_plugins.sweeps_local_launcher.local_launcher.LocalLauncher"

    # Number of jobs running at once (slots). null: one slot per group of `gpus_per_job` visible GPUs
    # (CUDA_VISIBLE_DEVICES, else the GPUs found on the machine), or 1 slot without GPUs.
    # An Optuna sweep (hydra/sweeper=sweeps_optuna) sets it from `hydra.sweeper.workers`.
    n_jobs: int | None = None

    # GPUs given to each job through its own CUDA_VISIBLE_DEVICES. When there are more slots than GPU
    # groups, slots share groups round-robin. 0: leave CUDA_VISIBLE_DEVICES as it is.
    gpus_per_job: int = 1

    # CPU threads of each job (OMP_NUM_THREADS, MKL_NUM_THREADS) unless already set in the environment.
    # null: usable cores // n_jobs, at least 1.
    threads_per_job: int | None = None

    # Seconds between SIGTERM and SIGKILL when a job is cancelled (pruned trial, Ctrl-C).
    cancel_grace_s: float = 10.0

    # Start each slot's next process while its current job runs, so the next job skips interpreter
    # and Hydra start-up (about half a second per job).
    prestart: bool = True


ConfigStore.instance().store(
    group="hydra/launcher",
    name="sweeps_local",
    node=LocalLauncherConf,
    provider="sweeps_local_launcher",
)
