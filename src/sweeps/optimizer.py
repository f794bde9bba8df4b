"""The `optimizer` config group: its schema and the optimizer + learning-rate schedule it builds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sweeps.schema.optimizer import OptimizerConfig

if TYPE_CHECKING:
    import torch

NAMES = ("adamw", "sgd", "adafactor")
SCHEDULES = ("linear", "cosine", "constant")


def problems(cfg: OptimizerConfig) -> list[str]:
    """Checks of the values alone."""
    errors = []
    if cfg.name not in NAMES:
        errors.append(f"optimizer.name={cfg.name}: choose one of {', '.join(NAMES)} (e.g. optimizer=adamw)")
    if not cfg.lr > 0:
        errors.append(f"lr={cfg.lr}: the learning rate must be > 0, e.g. lr=2e-5")
    if cfg.weight_decay < 0:
        errors.append(f"optimizer.weight_decay={cfg.weight_decay}: must be >= 0, e.g. 0.01")
    if not 0.0 <= cfg.warmup_ratio < 1.0:
        errors.append(f"optimizer.warmup_ratio={cfg.warmup_ratio}: must be in [0, 1), e.g. 0.1")
    if cfg.schedule not in SCHEDULES:
        errors.append(f"optimizer.schedule={cfg.schedule}: choose one of {', '.join(SCHEDULES)}")
    if cfg.max_grad_norm < 0:
        errors.append(f"optimizer.max_grad_norm={cfg.max_grad_norm}: must be >= 0 (0 turns clipping off)")
    return errors


def build_optimizer(
    cfg: OptimizerConfig, model: torch.nn.Module, total_steps: int, device: str
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Optimizer over the trainable parameters (no decay on biases and norms) and its schedule."""
    import torch
    from transformers import get_scheduler

    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.name == "adamw":
        fused = cfg.fused and device.startswith("cuda")
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused)
    elif cfg.name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    else:
        from transformers.optimization import Adafactor

        optimizer = Adafactor(groups, lr=cfg.lr, scale_parameter=False, relative_step=False, warmup_init=False)
    schedule = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[cfg.schedule]
    scheduler = get_scheduler(
        schedule,
        optimizer,
        num_warmup_steps=int(cfg.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    return optimizer, scheduler
