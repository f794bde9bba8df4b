"""The whole run config: one schema per group, registered in Hydra's ConfigStore as `base_config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.config_store import ConfigStore

from sweeps.compute import ComputeConfig
from sweeps.dataset import DatasetConfig
from sweeps.deploy import DeployConfig
from sweeps.model import ModelConfig
from sweeps.optimizer import OptimizerConfig
from sweeps.promote import RegistryConfig
from sweeps.sweep import SweepConfig, direction_for
from sweeps.tokenizer import TokenizerConfig
from sweeps.tracking import TrackingConfig

if TYPE_CHECKING:
    from omegaconf import DictConfig


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    # Shortcuts, interpolated into the groups (lr=2e-5 is optimizer.lr=2e-5).
    lr: float = 5e-5
    batch_size: int = 8
    epochs: int = 1
    # Optimizer steps to run; -1 lets `epochs` decide.
    max_steps: int = -1
    seed: int = 42
    # Evaluate (and report to the sweeper) every this many steps; 0: only at the end.
    eval_every: int = 0
    eval_batch_size: int = 32
    grad_accum_steps: int = 1
    log_every: int = 10
    # Metric train() returns for the sweeper: accuracy, precision, recall, f1 or eval_loss.
    objective: str = "accuracy"
    # Causal LM: pack whole documents into rows of tokenizer.max_length tokens (no attention across them).
    packing: bool = True
    # Save the checkpoint and tokenizer in the run dir (checkpoint/).
    save_checkpoint: bool = True


OBJECTIVES = ("accuracy", "precision", "recall", "f1", "eval_loss")


def register() -> None:
    """Make the schemas known to Hydra (config.yaml extends `base_config`) and the resolvers it uses."""
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="base_config", node=Config)
    if not OmegaConf.has_resolver("direction"):
        OmegaConf.register_new_resolver("direction", direction_for)
    from sweeps import databricks

    databricks.register()


def load_job_config(text: str) -> DictConfig:
    """A Hydra job's whole config from YAML (`OmegaConf.to_yaml(HydraConfig.instance().cfg)`), its `hydra` node
    typed as `HydraConfig.set_config` expects: how a job's Hydra state reaches another process (the ranks of a
    run, a trial on a Databricks cluster)."""
    from hydra.conf import HydraConf
    from omegaconf import DictConfig, OmegaConf, open_dict

    config = OmegaConf.create(text)
    assert isinstance(config, DictConfig)
    if "hydra" in config:
        hydra = OmegaConf.structured(HydraConf)
        OmegaConf.set_struct(hydra, False)  # keys the driver's Hydra added beyond the schema stay
        hydra.merge_with(config.hydra)
        with open_dict(config):
            config.hydra = hydra
    OmegaConf.set_struct(config, True)
    return config


def conf_dir() -> Path:
    """The conf/ folder: $SWEEPS_CONF_DIR, else the one beside the source tree, else the packaged copy."""
    import os

    if os.environ.get("SWEEPS_CONF_DIR"):
        return Path(os.environ["SWEEPS_CONF_DIR"]).resolve()
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[1] / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError("sweeps: no conf/ folder found; set SWEEPS_CONF_DIR")
