"""Schema of the `dataset` group (conf/dataset/); consumed by sweeps.dataset."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import II


@dataclass
class DatasetConfig:
    # Hub dataset id (e.g. imdb, glue); ignored when `path` is set.
    name: str | None = None
    # Hub config name (e.g. sst2 for glue).
    subset: str | None = None
    # Local folder (files named after their split: train*.jsonl, test*.csv, ...) or one file.
    path: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    # Three splits. train: what the model learns from. validation: what pruning, the objective a sweeper optimises
    # and the choice of the champion see, at every eval_every. test: scored once at the end (test_* metrics).
    train_split: str = "train"
    # null: carved from the train split with `seed` (validation_size examples, else validation_fraction of it).
    validation_split: str | None = None
    test_split: str = "test"
    # Number of examples drawn (after shuffling) from each split; null takes the whole split.
    train_size: int | None = None
    validation_size: int | None = None
    test_size: int | None = None
    # Share of the train split carved out for validation when there is no validation split.
    validation_fraction: float = 0.1
    shuffle: bool = True
    # Seed of the shuffles; the run's `seed`.
    seed: int = II("seed")
    # Class names in label order; a causal LM scores " <name>" after the prompt.
    label_names: list[str] = field(default_factory=lambda: ["negative", "positive"])
    # A causal LM reads each example as this prompt, then the label word.
    prompt: str = "Text: {text}\nLabel:"
