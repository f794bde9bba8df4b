"""Schema of the `model` group (conf/model/); consumed by sweeps.model (sizes mapped per family in
sweeps.model_families)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    # Hub model id or a local folder, for pretrained weights: any architecture the Auto classes load.
    name: str = "gpt2"
    # Architecture family of a scratch model (a transformers model_type): gpt2, llama, qwen2, mistral, gemma,
    # gemma2, gemma3_text, phi3.
    model_type: str = "gpt2"
    # pretrained: the weights of `name`; scratch: the architecture below with random weights (offline, tests).
    init: str = "pretrained"
    # classification: a sequence-classification head; causal_lm: the LM head, scored on label words.
    task: str = "classification"
    # Architecture of a scratch model, in names every family shares (a pretrained model takes its own from `name`).
    layers: int = 12
    # Attention (query) heads.
    heads: int = 12
    # Key/value heads (grouped-query attention); null: as many as `heads`. GPT-2 has no such option.
    kv_heads: int | None = None
    # Width of the residual stream (the embedding size).
    hidden: int = 768
    # Width of the MLP; null: the family's ratio (GPT-2 4 x hidden, gated MLPs 8/3 x hidden).
    intermediate: int | None = None
    # Width of one attention head; null: hidden / heads (Gemma's are wider). GPT-2 has no such option.
    head_dim: int | None = None
    # Longest sequence the position encoding covers.
    max_positions: int = 1024
    # Dropout of the family's dropout layers (attention; GPT-2 and Phi-3 also residual and embedding).
    dropout: float = 0.1
    # Tie the LM head to the input embedding; null: the family's default (GPT-2, Gemma: tied).
    tie_embeddings: bool | None = None
    # Weights' dtype: auto (bfloat16 on GPUs that support it, float32 elsewhere), float32, bfloat16.
    dtype: str = "auto"
    # Attention kernel: sdpa, eager, or flash_attention_2 (CUDA, with the flash_attn package installed); null:
    # transformers' choice (sdpa where the family has it, e.g. not Gemma 2, whose soft-capping needs eager).
    attn_implementation: str | None = None
    # Recompute each block's activations in the backward pass: less memory, about a third more compute.
    gradient_checkpointing: bool = False
