"""The architecture families a scratch model is built from: how the `model` group's neutral size keys (layers,
heads, kv_heads, hidden, intermediate, head_dim, max_positions, dropout) map to each family's transformers config,
what a family lacks, and its parameter count computed from the sizes alone."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sweeps.schema.model import ModelConfig

# The neutral keys of the decoder families that follow Llama's config (Llama, Qwen2, Mistral, Gemma, Phi-3).
LLAMA_KEYS = {
    "layers": "num_hidden_layers",
    "heads": "num_attention_heads",
    "kv_heads": "num_key_value_heads",
    "hidden": "hidden_size",
    "intermediate": "intermediate_size",
    "max_positions": "max_position_embeddings",
    "head_dim": "head_dim",
    "tie_embeddings": "tie_word_embeddings",
}


@dataclass(frozen=True)
class Family:
    """One transformers `model_type`: its config's names for the neutral keys and the shape of its blocks."""

    model_type: str
    # Neutral key -> the config attribute; a key not listed is an option the family does not have.
    keys: dict[str, str]
    # Config attributes that `model.dropout` sets.
    dropout_keys: tuple[str, ...] = ("attention_dropout",)
    # Its MLP: gated (gate, up, down projections) or GPT-2's two matrices with biases.
    gated_mlp: bool = True
    # intermediate = this x hidden when `model.intermediate` is null (gated MLPs: 8/3, rounded up to 64).
    mlp_ratio: float = 8 / 3
    # Biases on the query, key and value projections (Qwen2).
    qkv_bias: bool = False
    # Norms per block (Gemma 2 and 3 norm before and after attention and MLP), LayerNorm (weight + bias) or RMSNorm.
    block_norms: int = 2
    layer_norm: bool = False
    # RMSNorms on the queries and keys, of head_dim each (Gemma 3).
    qk_norm: bool = False
    # A learned position embedding (GPT-2); the others rotate positions (RoPE), which has no parameters.
    learned_positions: bool = False
    # The family's default for tying the LM head to the input embedding (`model.tie_embeddings: null`).
    tie_default: bool = False


FAMILIES = {
    family.model_type: family
    for family in (
        Family(
            "gpt2",
            keys={
                "layers": "n_layer",
                "heads": "n_head",
                "hidden": "n_embd",
                "intermediate": "n_inner",
                "max_positions": "n_positions",
                "tie_embeddings": "tie_word_embeddings",
            },
            dropout_keys=("resid_pdrop", "embd_pdrop", "attn_pdrop"),
            gated_mlp=False,
            mlp_ratio=4,
            layer_norm=True,
            learned_positions=True,
            tie_default=True,
        ),
        Family("llama", keys=LLAMA_KEYS),
        Family("mistral", keys=LLAMA_KEYS),
        Family("qwen2", keys=LLAMA_KEYS, qkv_bias=True),
        Family("gemma", keys=LLAMA_KEYS, tie_default=True),
        Family("gemma2", keys=LLAMA_KEYS, block_norms=4, tie_default=True),
        Family("gemma3_text", keys=LLAMA_KEYS, block_norms=4, qk_norm=True, tie_default=True),
        Family("phi3", keys=LLAMA_KEYS, dropout_keys=("attention_dropout", "resid_pdrop", "embd_pdrop")),
    )
}


def problems(cfg: ModelConfig) -> list[str]:
    """The neutral sizes checked against the family's options (scratch models only: a pretrained one takes its
    architecture from `model.name`)."""
    family = FAMILIES.get(cfg.model_type)
    if family is None:
        return [
            f"model.model_type={cfg.model_type}: no family to build from scratch; choose one of "
            f"{', '.join(FAMILIES)}, or load any architecture from the Hub or a folder with model.name=... "
            "model.init=pretrained"
        ]
    errors = []
    for key in ("layers", "heads", "hidden", "max_positions"):
        if getattr(cfg, key) <= 0:
            errors.append(f"model.{key}={getattr(cfg, key)}: must be positive")
    for key in ("kv_heads", "intermediate", "head_dim"):
        value = getattr(cfg, key)
        if value is not None and key not in family.keys:
            errors.append(
                f"model.{key}={value}: {family.model_type} has no such option"
                + (" (no grouped-query attention)" if key == "kv_heads" else "")
                + f"; leave it null, or choose a family that has it ({_families_with(key)})"
            )
        elif value is not None and value <= 0:
            errors.append(f"model.{key}={value}: must be positive, or null for the family's default")
    if errors:
        return errors
    if cfg.head_dim is None and cfg.hidden % cfg.heads:
        errors.append(
            f"model.hidden={cfg.hidden}: must be a multiple of model.heads={cfg.heads}, "
            f"e.g. model.hidden={cfg.heads * max(1, cfg.hidden // cfg.heads)}"
            + (" (or set model.head_dim)" if "head_dim" in family.keys else "")
        )
    kv = kv_heads(cfg)
    if kv > cfg.heads or cfg.heads % kv:
        errors.append(
            f"model.kv_heads={cfg.kv_heads}: must divide model.heads={cfg.heads} (each key/value head serves "
            "a group of query heads); e.g. 1, or null for as many as model.heads"
        )
    return errors


def _families_with(key: str) -> str:
    return ", ".join(name for name, family in FAMILIES.items() if key in family.keys)


def kv_heads(cfg: ModelConfig) -> int:
    return cfg.kv_heads if cfg.kv_heads is not None else cfg.heads


def head_dim(cfg: ModelConfig) -> int:
    return cfg.head_dim if cfg.head_dim is not None else cfg.hidden // cfg.heads


def intermediate(cfg: ModelConfig) -> int:
    """The MLP width: `model.intermediate`, else the family's ratio (gated MLPs rounded up to a multiple of 64)."""
    if cfg.intermediate is not None:
        return cfg.intermediate
    family = FAMILIES[cfg.model_type]
    if not family.gated_mlp:
        return int(family.mlp_ratio * cfg.hidden)
    return 64 * math.ceil(family.mlp_ratio * cfg.hidden / 64)


def tied(cfg: ModelConfig) -> bool:
    return cfg.tie_embeddings if cfg.tie_embeddings is not None else FAMILIES[cfg.model_type].tie_default


def config_kwargs(cfg: ModelConfig) -> dict:
    """The family config's arguments for the neutral sizes (vocabulary, pad token and head come from the caller)."""
    family = FAMILIES[cfg.model_type]
    sizes = {
        "layers": cfg.layers,
        "heads": cfg.heads,
        "kv_heads": kv_heads(cfg),
        "hidden": cfg.hidden,
        "intermediate": intermediate(cfg),
        "max_positions": cfg.max_positions,
        "head_dim": head_dim(cfg),
        "tie_embeddings": tied(cfg),
    }
    kwargs = {family.keys[key]: value for key, value in sizes.items() if key in family.keys}
    kwargs.update(dict.fromkeys(family.dropout_keys, cfg.dropout))
    return kwargs


def parameter_count(cfg: ModelConfig, vocab_size: int, num_labels: int) -> int:
    """Parameters of the scratch model `cfg` describes, with the task's head, counted from the sizes alone."""
    family = FAMILIES[cfg.model_type]
    h, i, d = cfg.hidden, intermediate(cfg), head_dim(cfg)
    q, kv = cfg.heads * d, kv_heads(cfg) * d
    attention = h * (q + 2 * kv) + q * h
    if family.qkv_bias:
        attention += q + 2 * kv
    if family.gated_mlp:
        mlp = 3 * h * i
    else:  # GPT-2: c_attn and c_proj, c_fc and c_proj, each with a bias
        attention += q + 2 * kv + h
        mlp = 2 * h * i + i + h
    norm = 2 * h if family.layer_norm else h
    block = attention + mlp + family.block_norms * norm + (2 * d if family.qk_norm else 0)
    body = vocab_size * h + cfg.layers * block + norm
    if family.learned_positions:
        body += cfg.max_positions * h
    if cfg.task == "classification":
        return body + h * num_labels
    return body + (0 if tied(cfg) else vocab_size * h)
