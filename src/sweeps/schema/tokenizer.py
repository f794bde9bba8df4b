"""Schema of the `tokenizer` group (conf/tokenizer/); consumed by sweeps.tokenizer."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import II


@dataclass
class TokenizerConfig:
    # Hub name or folder; by default the model's own (`model.name`), so its tokenizer and chat template come with
    # it. Ignored when `path` is set.
    name: str = II("model.name")
    # Local folder with the tokenizer files (vocab.json + merges.txt, or tokenizer.json).
    path: str | None = None
    # Longer examples are truncated to this many tokens.
    max_length: int = 512
