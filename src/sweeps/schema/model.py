"""Schema of the `model` group (conf/model/); consumed by sweeps.model."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    # Hub model id, used for pretrained weights.
    name: str = "gpt2"
    # Architecture family (a transformers model_type), used to build a scratch model offline.
    model_type: str = "gpt2"
    # pretrained: Hub weights; scratch: the architecture below with random weights (offline, tests).
    init: str = "pretrained"
    # classification: a sequence-classification head; causal_lm: the LM head, scored on label words.
    task: str = "classification"
    # Architecture of a scratch model (and a check on a pretrained one).
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_positions: int = 1024
    dropout: float = 0.1
