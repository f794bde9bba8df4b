"""The `deploy` config group: where a promoted checkpoint goes after a sweep."""

from __future__ import annotations

from dataclasses import dataclass

TARGETS = ("none",)


@dataclass
class DeployConfig:
    # none: keep the checkpoint and its MLflow model; nothing is deployed.
    target: str = "none"


def problems(cfg: DeployConfig) -> list[str]:
    """Checks of the values alone."""
    if cfg.target not in TARGETS:
        return [f"deploy.target={cfg.target}: choose one of {', '.join(TARGETS)} (e.g. deploy=none)"]
    return []
