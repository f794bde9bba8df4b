"""sweeps: Hydra configs, Optuna sweeps and MLflow tracking for fine-tuning language models."""

__version__ = "0.1.0"
