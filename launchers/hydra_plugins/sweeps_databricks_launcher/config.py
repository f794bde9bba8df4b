"""Schema of `hydra/launcher=sweeps_databricks` (selected by compute=databricks in the sweeps app): each option
is defined here once and set as `hydra.launcher.<option>`, e.g. hydra.launcher.upload_dir=/Volumes/main/ml/sweeps."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


def _single_node_t4() -> dict[str, Any]:
    """A one-GPU single-node job cluster on spot VMs (on-demand fallback), on the 15.4 LTS ML GPU runtime."""
    return {
        "spark_version": "15.4.x-gpu-ml-scala2.12",
        "node_type_id": "Standard_NC4as_T4_v3",
        "num_workers": 0,
        "spark_conf": {"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*, 4]"},
        "custom_tags": {"ResourceClass": "SingleNode"},
        "azure_attributes": {
            "availability": "SPOT_WITH_FALLBACK_AZURE",
            "first_on_demand": 1,
            "spot_bid_max_price": -1,
        },
        "data_security_mode": "SINGLE_USER",
    }


@dataclass
class DatabricksLauncherConf:
    _target_: str = "hydra_plugins.sweeps_databricks_launcher.databricks_launcher.DatabricksLauncher"

    # Runs at once. null: 1. An Optuna sweep (hydra/sweeper=sweeps_optuna) sets it from `hydra.sweeper.workers`.
    n_jobs: int | None = None

    # Profile of ~/.databrickscfg; null: the databricks-sdk credential chain (DATABRICKS_HOST with
    # DATABRICKS_TOKEN, DATABRICKS_CONFIG_PROFILE, Azure service principal ARM_CLIENT_ID/ARM_CLIENT_SECRET/
    # ARM_TENANT_ID, Azure CLI, ...). Credentials never go in a config file.
    profile: str | None = None

    # An existing cluster to run every trial on; set new_cluster to null then.
    existing_cluster_id: str | None = None

    # A new job cluster per trial, as the Clusters API describes one (spark_version, node_type_id,
    # num_workers or autoscale, azure_attributes, spark_conf, custom_tags, ...). Default: one T4 GPU, single node.
    new_cluster: Any = field(default_factory=_single_node_t4)

    # More libraries for each run, as the Jobs API describes them ({pypi: {package: peft}}, {whl: ...}).
    libraries: Any = field(default_factory=list)

    # Train on every node of the cluster with TorchDistributor (new_cluster.num_workers > 0).
    distributed: bool = False

    # Unity Catalog volume folder for the wheel, the trials' inputs, progress and results:
    # /Volumes/<catalog>/<schema>/<volume>[/folder]
    upload_dir: str | None = None

    # Seconds a run may take, cluster start included; 0: no limit.
    timeout: int = 7200

    # Seconds between the driver's looks at a run (state, progress lines for pruning).
    poll_interval: float = 10.0

    # Seconds between a trial's uploads of its progress file on the cluster.
    progress_interval: float = 5.0

    # A wheel of this project to ship instead of building one from the source tree once per sweep.
    wheel: str | None = None


ConfigStore.instance().store(
    group="hydra/launcher",
    name="sweeps_databricks",
    node=DatabricksLauncherConf,
    provider="sweeps_databricks_launcher",
)
