"""The `model` config group: its checks, the architecture a run will train (a transformers config, before any
weights exist), the memory check on it, and the one builder (weights of a Hub id or folder, or a scratch model)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from sweeps import model_families
from sweeps.errors import ConfigError
from sweeps.schema.model import ModelConfig

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig

INITS = ("pretrained", "scratch")
TASKS = ("classification", "causal_lm")
DTYPES = ("auto", "float32", "bfloat16")
ATTENTION = ("sdpa", "eager", "flash_attention_2")


def problems(cfg: ModelConfig) -> list[str]:
    """Checks that need no loading."""
    errors = []
    if cfg.init not in INITS:
        errors.append(f"model.init={cfg.init}: choose pretrained or scratch")
    if cfg.task not in TASKS:
        errors.append(f"model.task={cfg.task}: choose classification or causal_lm")
    if cfg.init == "scratch":
        errors += model_families.problems(cfg)
    if not 0.0 <= cfg.dropout < 1.0:
        errors.append(f"model.dropout={cfg.dropout}: must be in [0, 1)")
    if cfg.dtype not in DTYPES:
        errors.append(f"model.dtype={cfg.dtype}: choose one of {', '.join(DTYPES)}")
    if cfg.attn_implementation is not None and cfg.attn_implementation not in ATTENTION:
        errors.append(
            f"model.attn_implementation={cfg.attn_implementation}: choose one of {', '.join(ATTENTION)}, "
            "or null for transformers' choice"
        )
    elif cfg.attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        errors.append(
            "model.attn_implementation=flash_attention_2: the flash_attn package is not installed; "
            "use sdpa (PyTorch's fused attention), or pip install flash-attn on a CUDA machine"
        )
    return errors


def device_problems(cfg: ModelConfig, device: str) -> list[str]:
    """Checks that need the run's device."""
    if cfg.attn_implementation == "flash_attention_2" and not device.startswith("cuda"):
        return [f"model.attn_implementation=flash_attention_2: needs a CUDA GPU and this run is on {device}; use sdpa"]
    return []


def weight_dtype(cfg: ModelConfig, device: str) -> torch.dtype:
    """`model.dtype` as a torch dtype: auto is bfloat16 on GPUs that support it, float32 elsewhere."""
    import torch

    if cfg.dtype == "auto":
        bf16 = device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    return getattr(torch, cfg.dtype)


def _head(cfg: ModelConfig, label_names: list[str]) -> dict[str, Any]:
    if cfg.task != "classification":
        return {}
    return {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
    }


def architecture(cfg: ModelConfig, label_names: list[str], pad_token_id: int, vocab_size: int) -> Any:
    """The transformers config of the model `build_model` builds: from the neutral sizes for a scratch model,
    fetched with AutoConfig (no weights) for a pretrained one."""
    from transformers import AutoConfig

    head = _head(cfg, label_names)
    if cfg.init == "scratch":
        sizes = model_families.config_kwargs(cfg)
        return AutoConfig.for_model(cfg.model_type, vocab_size=vocab_size, pad_token_id=pad_token_id, **sizes, **head)
    from sweeps import hub

    return hub.load("model.name", cfg.name, AutoConfig.from_pretrained, pad_token_id=pad_token_id, **head)


def parameter_count(cfg: ModelConfig, config: Any) -> int:
    """Parameters of the model `config` describes: from the sizes for a scratch model of a known family, else by
    building it on the meta device (shapes only, no memory)."""
    if cfg.init == "scratch":
        return model_families.parameter_count(cfg, config.vocab_size, getattr(config, "num_labels", 2))
    import torch

    with torch.device("meta"):
        shell = _auto(cfg).from_config(config)
    return sum(p.numel() for p in shell.parameters())


def check_run(run: DictConfig, label_names: list[str], pad_token_id: int, vocab_size: int, device: str) -> None:
    """Before any weights load: refuse options the device lacks, log the parameters and memory the run will need,
    and refuse a model that cannot fit (ConfigError naming the keys to change)."""
    from sweeps import model_memory

    errors = device_problems(run.model, device)
    if errors:
        raise ConfigError(*errors)
    config = architecture(run.model, label_names, pad_token_id, vocab_size)
    params = parameter_count(run.model, config)
    weight_bytes = weight_dtype(run.model, device).itemsize
    model_memory.check_fits(run, model_memory.estimate(run, config, params, weight_bytes, device), device)


def _auto(cfg: ModelConfig):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if cfg.task == "classification" else AutoModelForCausalLM


def build_model(
    cfg: ModelConfig,
    label_names: list[str],
    pad_token_id: int,
    vocab_size: int,
    *,
    device: str = "cpu",
    **load_kwargs: Any,
) -> torch.nn.Module:
    """The model with the head the task needs, its pad token set, at `model.dtype` for `device`, with the chosen
    attention kernel (and gradient checkpointing when asked). `load_kwargs` go to `from_pretrained` (a
    quantization_config, a device_map, ...) and override the options above; a scratch model takes none."""
    auto = _auto(cfg)
    options = {"dtype": weight_dtype(cfg, device), "attn_implementation": cfg.attn_implementation}
    try:
        if cfg.init == "scratch":
            model = auto.from_config(architecture(cfg, label_names, pad_token_id, vocab_size), **options)
        else:
            from sweeps import hub

            head, kwargs = _head(cfg, label_names), {**options, **load_kwargs}
            model = hub.load("model.name", cfg.name, auto.from_pretrained, pad_token_id=pad_token_id, **head, **kwargs)
    except ValueError as exc:
        if cfg.attn_implementation is None or "attention" not in str(exc).lower():
            raise
        raise ConfigError(
            f"model.attn_implementation={cfg.attn_implementation}: this architecture does not support it "
            f"({str(exc).splitlines()[0][:160]}); use eager, or null for transformers' choice"
        ) from exc
    model.config.pad_token_id = pad_token_id
    if cfg.gradient_checkpointing:
        reentrant = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5.2x names it so
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=reentrant)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=reentrant)
        model.config.use_cache = False
    return model
