"""Schema of `hydra/launcher=sweeps_databricks`.

Each option defaults to the same key of the app's `compute` node when it has one (`compute=databricks`
in the sweeps app), so users set `compute.upload_dir=...`; any other app sets `hydra.launcher.upload_dir=...`.
"""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore


def _from_compute(key: str, default: str) -> str:
    return "${oc.select:compute." + key + "," + default + "}"


@dataclass
class DatabricksLauncherConf:
    _target_: str = "hydra_plugins.sweeps_databricks_launcher.databricks_launcher.DatabricksLauncher"

    # Runs at once. null: 1. An Optuna sweep (hydra/sweeper=sweeps_optuna) sets it from `hydra.sweeper.workers`.
    n_jobs: int | None = None

    # Profile of ~/.databrickscfg; null: the databricks-sdk credential chain (DATABRICKS_HOST with
    # DATABRICKS_TOKEN, DATABRICKS_CONFIG_PROFILE, Azure service principal ARM_CLIENT_ID/ARM_CLIENT_SECRET/
    # ARM_TENANT_ID, Azure CLI, ...). Credentials never go in a config file.
    profile: str | None = _from_compute("profile", "null")

    # An existing cluster to run every trial on; set new_cluster to null then.
    existing_cluster_id: str | None = _from_compute("existing_cluster_id", "null")

    # A new job cluster per trial, as the Clusters API describes one (spark_version, node_type_id,
    # num_workers or autoscale, azure_attributes, spark_conf, custom_tags, ...).
    new_cluster: Any = _from_compute("new_cluster", "null")

    # More libraries for each run, as the Jobs API describes them ({pypi: {package: peft}}, {whl: ...}).
    libraries: Any = _from_compute("libraries", "[]")

    # Train on every node of the cluster with TorchDistributor (new_cluster.num_workers > 0).
    distributed: bool = _from_compute("distributed", "false")  # type: ignore[assignment]

    # Unity Catalog volume folder for the wheel, the trials' inputs, progress and results:
    # /Volumes/<catalog>/<schema>/<volume>[/folder]
    upload_dir: str | None = _from_compute("upload_dir", "null")

    # Seconds a run may take, cluster start included; 0: no limit.
    timeout: int = _from_compute("timeout", "7200")  # type: ignore[assignment]

    # Seconds between the driver's looks at a run (state, progress lines for pruning).
    poll_interval: float = _from_compute("poll_interval", "10.0")  # type: ignore[assignment]

    # Seconds between a trial's uploads of its progress file on the cluster.
    progress_interval: float = _from_compute("progress_interval", "5.0")  # type: ignore[assignment]

    # A wheel of this project to ship instead of building one from the source tree once per sweep.
    wheel: str | None = _from_compute("wheel", "null")


ConfigStore.instance().store(
    group="hydra/launcher",
    name="sweeps_databricks",
    node=DatabricksLauncherConf,
    provider="sweeps_databricks_launcher",
)
