"""Schema of the `optimizer` group (conf/optimizer/); consumed by sweeps.optimizer."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import II


@dataclass
class OptimizerConfig:
    # adamw | sgd | adafactor
    name: str = "adamw"
    # Set through the top-level shortcut `lr`.
    lr: float = II("lr")
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9
    # Fraction of the steps spent warming the rate up from zero.
    warmup_ratio: float = 0.0
    # linear | cosine | constant decay after warm-up.
    schedule: str = "linear"
    # Gradients are clipped to this norm; 0 turns clipping off.
    max_grad_norm: float = 1.0
    # Fused AdamW kernel on CUDA.
    fused: bool = True
