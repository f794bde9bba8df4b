"""The `model` config group: its schema and the builder (Hub weights or a scratch architecture)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sweeps.errors import ConfigError
from sweeps.schema.model import ModelConfig

if TYPE_CHECKING:
    import torch

INITS = ("pretrained", "scratch")
TASKS = ("classification", "causal_lm")


def problems(cfg: ModelConfig) -> list[str]:
    """Checks that need no loading."""
    errors = []
    if cfg.init not in INITS:
        errors.append(f"model.init={cfg.init}: choose pretrained or scratch")
    if cfg.task not in TASKS:
        errors.append(f"model.task={cfg.task}: choose classification or causal_lm")
    for key in ("n_layer", "n_head", "n_embd", "n_positions"):
        if getattr(cfg, key) <= 0:
            errors.append(f"model.{key}={getattr(cfg, key)}: must be positive")
    if cfg.n_head > 0 and cfg.n_embd % cfg.n_head:
        errors.append(
            f"model.n_embd={cfg.n_embd}: must be a multiple of model.n_head={cfg.n_head}, "
            f"e.g. model.n_embd={cfg.n_head * max(1, cfg.n_embd // cfg.n_head)}"
        )
    if not 0.0 <= cfg.dropout < 1.0:
        errors.append(f"model.dropout={cfg.dropout}: must be in [0, 1)")
    return errors


def build_model(cfg: ModelConfig, label_names: list[str], pad_token_id: int, vocab_size: int) -> torch.nn.Module:
    """The model with the head the task needs, its pad token set."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForSequenceClassification if cfg.task == "classification" else AutoModelForCausalLM
    labels = {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
    }
    head = labels if cfg.task == "classification" else {}
    if cfg.init == "scratch":
        try:
            config = AutoConfig.for_model(
                cfg.model_type,
                n_layer=cfg.n_layer,
                n_head=cfg.n_head,
                n_embd=cfg.n_embd,
                n_positions=cfg.n_positions,
                vocab_size=vocab_size,
                resid_pdrop=cfg.dropout,
                embd_pdrop=cfg.dropout,
                attn_pdrop=cfg.dropout,
                pad_token_id=pad_token_id,
                **head,
            )
        except ValueError as exc:
            raise ConfigError(f"model.model_type={cfg.model_type}: not a transformers architecture ({exc})") from exc
        model = auto.from_config(config)
    else:
        from sweeps import hub

        model = hub.load("model.name", cfg.name, auto.from_pretrained, pad_token_id=pad_token_id, **head)
    model.config.pad_token_id = pad_token_id
    return model
