"""The `compute` config group: where a run trains and at what precision."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from sweeps.schema.compute import ComputeConfig

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


def problems(cfg: ComputeConfig) -> list[str]:
    """Checks of the values alone."""
    errors = []
    if cfg.device not in DEVICES:
        errors.append(f"compute.device={cfg.device}: choose one of {', '.join(DEVICES)}")
    if cfg.precision not in PRECISIONS:
        errors.append(f"compute.precision={cfg.precision}: choose one of {', '.join(PRECISIONS)}")
    if cfg.threads is not None and cfg.threads < 1:
        errors.append(f"compute.threads={cfg.threads}: must be >= 1, or null for torch's default")
    if cfg.processes < 1:
        errors.append(f"compute.processes={cfg.processes}: must be >= 1 (1: a single process)")
    return errors


def resolve_device(cfg: ComputeConfig) -> str:
    """The torch device string a run uses."""
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from sweeps.errors import ConfigError

    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("compute.device=cuda: no GPU is visible here; use compute=cpu")
    if device == "cuda" and cfg.processes > torch.cuda.device_count():
        raise ConfigError(
            f"compute.processes={cfg.processes}: one GPU per process, and {torch.cuda.device_count()} are visible; "
            "lower it (in a sweep, give each trial that many with hydra.launcher.gpus_per_job)"
        )
    return device


def autocast(cfg: ComputeConfig, device: str) -> AbstractContextManager:
    """Mixed-precision context for forward passes (fp32 gets none)."""
    import torch

    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


def compiled(cfg: ComputeConfig, model, causal_lm: bool):
    """With `compute.compile`, compile in place the part the training step calls: the transformer body for a
    causal LM (its head runs chunk by chunk), the whole model for a classifier. Returns the model."""
    if cfg.compile:
        (model.base_model if causal_lm else model).compile()
    return model
