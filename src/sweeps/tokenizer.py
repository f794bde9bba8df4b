"""The `tokenizer` config group: its schema and the loader (local folder or Hub name)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from sweeps.errors import ConfigError
from sweeps.schema.tokenizer import TokenizerConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def problems(cfg: TokenizerConfig) -> list[str]:
    """Checks that need no loading."""
    errors = []
    if cfg.max_length < 8:
        errors.append(f"tokenizer.max_length={cfg.max_length}: must be at least 8 tokens, e.g. 512")
    if cfg.path is not None and not Path(cfg.path).expanduser().is_dir():
        errors.append(f"tokenizer.path={cfg.path}: no such folder; point it at a folder of tokenizer files")
    return errors


def load_tokenizer(cfg: TokenizerConfig) -> PreTrainedTokenizerBase:
    """A fast tokenizer with a pad token (GPT-2 has none: its end-of-text token pads)."""
    from transformers import AutoTokenizer

    if cfg.path is not None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(Path(cfg.path).expanduser()), use_fast=True)
        except (OSError, ValueError, TypeError) as exc:
            reason = str(exc).splitlines()[0][:200]
            raise ConfigError(
                f"tokenizer.path={cfg.path}: not a readable tokenizer folder ({reason}); it needs "
                "tokenizer.json, or vocab.json + merges.txt"
            ) from exc
    else:
        from sweeps import hub

        tokenizer = hub.load("tokenizer.name", cfg.name, AutoTokenizer.from_pretrained, use_fast=True)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"tokenizer: '{cfg.path or cfg.name}' has neither a pad nor an end-of-text token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    tokenizer.model_max_length = cfg.max_length
    return tokenizer


def identity(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of the vocabulary and rules, so caches never mix two tokenizers: of the files of a local
    folder (cheap), else of the serialised tokenizer."""
    digest = hashlib.sha256(f"{tokenizer.pad_token}|{tokenizer.eos_token}".encode())
    folder = Path(tokenizer.name_or_path)
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    if files:
        for path in files:
            digest.update(path.name.encode() + path.read_bytes())
    else:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
        digest.update(text.encode())
    return digest.hexdigest()[:16]
