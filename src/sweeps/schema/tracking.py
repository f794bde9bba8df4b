"""Schema of the `tracking` node; consumed by sweeps.tracking."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrackingConfig:
    # MLflow tracking URI; null: $MLFLOW_TRACKING_URI when set, else SQLite under outputs/.
    uri: str | None = None
    experiment: str = "sweeps"
    # Log the trained model with mlflow.transformers so MLflow can load and serve it.
    log_model: bool = True
