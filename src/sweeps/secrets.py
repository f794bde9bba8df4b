"""Secrets stay in the environment: anything that looks like one is masked before it is logged or saved."""

from __future__ import annotations

import os
import re
from typing import Any

SECRET_NAME = re.compile(r"token|secret|password|passwd|api[_-]?key|credential|private[_-]?key|client[_-]?key", re.I)
MASK = "***"


def secret_values() -> list[str]:
    """Values of environment variables whose names mark them as secrets."""
    return [v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 6]


def mask_text(text: str, values: list[str] | None = None) -> str:
    """The text with every secret value from the environment replaced."""
    for value in values if values is not None else secret_values():
        text = text.replace(value, MASK)
    return text


def mask(flat: dict[str, Any]) -> dict[str, Any]:
    """A flat key -> value mapping with secret-named keys and secret values masked."""
    values = secret_values()
    out = {}
    for key, value in flat.items():
        if SECRET_NAME.search(key.rsplit(".", 1)[-1]) and value not in (None, ""):
            out[key] = MASK
        elif isinstance(value, str):
            out[key] = mask_text(value, values)
        else:
            out[key] = value
    return out
