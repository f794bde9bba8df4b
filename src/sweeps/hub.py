"""The Hugging Face Hub: a fast reachability check and one plain message when it is out of reach."""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from urllib.parse import urlparse

from sweeps.errors import ConfigError

OFFLINE_HINT = (
    "Offline, point at local files and a local tokenizer and build the model from its config, e.g. "
    "dataset.path=../shared/data/imdb tokenizer.path=../shared/tokenizers/gpt2 model.init=scratch "
    "(or experiment=offline)."
)


@lru_cache(maxsize=1)
def reachable(timeout: float = 3.0) -> bool:
    """True when the Hub endpoint (or the HTTPS proxy in front of it) accepts a TCP connection."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    target = (
        os.environ.get("HTTPS_PROXY")
        or os.environ.get("https_proxy")
        or os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    )
    url = urlparse(target if "://" in target else f"https://{target}")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def unreachable_error(key: str, name: str) -> ConfigError:
    """The message for a Hub download that cannot happen."""
    return ConfigError(
        f"{key}={name}: the Hugging Face Hub is out of reach and '{name}' is not in the local cache. " + OFFLINE_HINT
    )


def load(key: str, name: str, loader, **kwargs):
    """Call a from_pretrained-style loader, from the local cache only when the Hub is out of reach."""
    online = reachable()
    try:
        return loader(name, local_files_only=not online, **kwargs)
    except OSError as exc:
        if not online:
            raise unreachable_error(key, name) from exc
        raise ConfigError(f"{key}={name}: cannot load it from the Hub ({exc}). Check the name.") from exc
