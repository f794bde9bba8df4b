"""The run config's schemas: dataclasses only, one module per config group, importing nothing else of sweeps.

`register()` is the one place they reach Hydra's ConfigStore. Sweeper and launcher options are not here: each
Hydra plugin defines its own (launchers/hydra_plugins/<plugin>/config.py), and presets set them directly
(`hydra.sweeper.n_trials=40`, `hydra.launcher.upload_dir=...`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sweeps.schema.compute import ComputeConfig
from sweeps.schema.dataset import DatasetConfig
from sweeps.schema.deploy import AzureOpenAIDeployConfig, DeployConfig, LocalDeployConfig
from sweeps.schema.early_stopping import EarlyStoppingConfig
from sweeps.schema.model import ModelConfig
from sweeps.schema.optimizer import OptimizerConfig
from sweeps.schema.registry import RegistryConfig
from sweeps.schema.tokenizer import TokenizerConfig
from sweeps.schema.tracking import TrackingConfig

# Metrics train() can return to a sweeper; eval_loss is minimised, the others maximised.
OBJECTIVES = ("accuracy", "precision", "recall", "f1", "eval_loss")


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
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
    # Metric train() returns for the sweeper: one of OBJECTIVES.
    objective: str = "accuracy"
    # Causal LM: pack whole documents into rows of tokenizer.max_length tokens (no attention across them).
    packing: bool = True
    # Save the checkpoint and tokenizer in the run dir (checkpoint/).
    save_checkpoint: bool = True
    # Write the whole training state (weights, optimizer, schedule, every RNG, data position, step, evaluations)
    # to checkpoints/ in the run dir every this many steps, and at the end; 0: never (the run cannot resume).
    checkpoint_every: int = 500
    # Training-state checkpoints kept (the newest; checkpoints/best, with early stopping, apart).
    checkpoint_keep: int = 2
    # Continue an interrupted run from its last checkpoint: auto (the newest interrupted run with the same
    # training config, else a fresh start), a run dir, or an MLflow run id; null: start from step 0.
    resume: str | None = None


def direction_for(objective: str) -> str:
    """The direction that improves an objective (the `direction` resolver: eval_loss is minimised)."""
    return "minimize" if objective == "eval_loss" else "maximize"


def register() -> None:
    """Make the schemas known to Hydra and the resolvers the configs use. conf/config.yaml extends
    `base_config`; conf/deploy/<target>.yaml extends `deploy_<target>_schema` (stored outside the deploy group,
    so they are no options of their own)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    store.store(name="deploy_azure_openai_schema", node=AzureOpenAIDeployConfig)
    store.store(name="deploy_local_schema", node=LocalDeployConfig)
    if not OmegaConf.has_resolver("direction"):
        OmegaConf.register_new_resolver("direction", direction_for)
