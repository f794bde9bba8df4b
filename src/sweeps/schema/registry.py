"""Schema of the `registry` node (the MLflow model registry); consumed by sweeps.registry."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RegistryConfig:
    # Registered model name; when tracking on Databricks, a Unity Catalog name catalog.schema.model.
    model_name: str = "sweeps"
    # Model registry URI; null: the tracking store (databricks-uc when tracking on Databricks).
    uri: str | None = None
    # The version deploy targets take; it moves only to a version that beats it on the same eval set.
    champion_alias: str = "champion"
    # The latest registered version that did not beat the champion.
    challenger_alias: str = "challenger"
