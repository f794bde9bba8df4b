"""What training a model will take, estimated before its weights exist: parameters, and the memory of weights,
gradients, optimizer states and activations at the run's dtype, batch and length; compared with what the machine
has (RAM on the CPU, free memory on a GPU), so a model that cannot fit is refused instead of killed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeps.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger(__name__)

GIB = 1 << 30
# Optimizer state tensors kept per trainable parameter (Adafactor's factored second moment is negligible).
STATES = {"adamw": 2, "sgd": 1, "adafactor": 0}
# The process itself: torch, transformers and the data on the CPU; the CUDA context and workspaces on a GPU.
RUNTIME = {"cpu": 1.0 * GIB, "cuda": 0.75 * GIB}
# Allocator fragmentation and the tensors the formula leaves out.
MARGIN = 0.10


@dataclass
class Estimate:
    """Parameters and bytes per process of one training run."""

    params: int
    weights: float
    grads: float
    optimizer: float
    activations: float
    runtime: float

    @property
    def total(self) -> float:
        parts = self.weights + self.grads + self.optimizer + self.activations
        return parts * (1 + MARGIN) + self.runtime

    def describe(self) -> str:
        parts = ("weights", "grads", "optimizer", "activations")
        detail = ", ".join(f"{name} {getattr(self, name) / GIB:.2f}" for name in parts)
        count = f"{self.params / 1e9:.2f}B" if self.params >= 1e9 else f"{self.params / 1e6:.1f}M"
        return f"{count} parameters, ~{self.total / GIB:.1f} GiB to train ({detail} GiB)"


def estimate(run: DictConfig, config: Any, params: int, weight_bytes: int, device: str) -> Estimate:
    """The memory one process of `run` needs to train the model `config` (a transformers config) describes:
    weights, gradients and optimizer states at `weight_bytes` per parameter, and activations after Korthikanti
    et al. 2022 (per block 34·s·b·h bytes at 16 bits, the MLP part scaled to the real width and doubled for a gated
    MLP, plus 5·a·s²·b for eager attention's scores; one block input per block with gradient checkpointing)."""
    from sweeps.loop import LOGIT_BUDGET

    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden, layers, heads = text.hidden_size, text.num_hidden_layers, text.num_attention_heads
    gated = not hasattr(text, "n_inner")
    width = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden
    tokens, length = run.batch_size * run.tokenizer.max_length, run.tokenizer.max_length
    half = weight_bytes == 2 or _autocast_bf16(run, device)
    scale = 1 if half else 2  # the formula's bytes are for 16-bit activations
    block = tokens * (15 * hidden + 4.25 * width * (2 if gated else 1)) * scale
    if run.model.attn_implementation == "eager":
        block += 5 * heads * length * length * run.batch_size * scale
    if run.model.gradient_checkpointing:
        activations = layers * tokens * hidden * 2 * scale + block
    else:
        activations = layers * block
    if run.model.task == "causal_lm":  # fp32 logits and their gradient, chunk by chunk past the budget
        activations += 2 * min(tokens * text.vocab_size * 4, LOGIT_BUDGET)
    states = STATES.get(run.optimizer.name, 2)
    if run.optimizer.name == "sgd" and not run.optimizer.momentum:
        states = 0
    return Estimate(
        params=params,
        weights=params * weight_bytes,
        grads=params * weight_bytes,
        optimizer=states * params * weight_bytes,
        activations=activations,
        runtime=RUNTIME["cuda" if device.startswith("cuda") else "cpu"],
    )


def _autocast_bf16(run: DictConfig, device: str) -> bool:
    if run.compute.precision == "bf16":
        return True
    if run.compute.precision != "auto" or not device.startswith("cuda"):
        return False
    import torch

    return torch.cuda.is_bf16_supported()


def available(device: str) -> tuple[float | None, str]:
    """Bytes free for training on `device` and where they were read: a GPU's free memory, else the RAM the kernel
    reports available (/proc/meminfo, or psutil where installed); None when neither can be read."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return float(free), f"free on {device} ({torch.cuda.get_device_name(torch.device(device))})"
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024, "RAM available (/proc/meminfo)"
    try:
        import psutil
    except ImportError:
        return None, "unknown"
    return float(psutil.virtual_memory().available), "RAM available (psutil)"


def check_fits(run: DictConfig, guess: Estimate, device: str) -> None:
    """Log the estimate; refuse the run (ConfigError naming the keys to change) when it cannot fit the device.
    On the CPU all of the run's processes share the RAM."""
    have, where = available(device)
    copies = run.compute.processes if not device.startswith("cuda") else 1
    need = guess.total * copies
    shared = f" x {copies} processes" if copies > 1 else ""
    log.info(
        "model %s: %s%s; %s",
        run.model.name if run.model.init == "pretrained" else f"{run.model.model_type} (scratch)",
        guess.describe(),
        shared,
        f"{have / GIB:.1f} GiB {where}" if have is not None else "memory available unknown",
    )
    if have is None or need <= have:
        return
    m = run.model
    if m.init == "scratch":
        key, smaller = (
            f"model.layers={m.layers} model.hidden={m.hidden}",
            "make it smaller (model.layers, model.hidden)",
        )
    else:
        key, smaller = f"model.name={m.name}", "choose a smaller model (model.name) or set model.dtype=bfloat16"
    raise ConfigError(
        f"{key}: {guess.describe()}{shared}, more than the {have / GIB:.1f} GiB {where}; {smaller}, lower "
        "batch_size or tokenizer.max_length, set model.gradient_checkpointing=true, or train on a bigger machine"
    )
