"""Schema of the `tokenizer` group (conf/tokenizer/); consumed by sweeps.tokenizer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenizerConfig:
    # Hub name; ignored when `path` is set.
    name: str = "gpt2"
    # Local folder with the tokenizer files (vocab.json + merges.txt, or tokenizer.json).
    path: str | None = None
    # Longer examples are truncated to this many tokens.
    max_length: int = 512
