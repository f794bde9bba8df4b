"""The `dataset` config group's consumer: the loader that turns it into train, validation and test splits."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sweeps.errors import ConfigError
from sweeps.schema.dataset import DatasetConfig

if TYPE_CHECKING:
    import pandas as pd

SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


SPLITS = ("train", "validation", "test")


@dataclass
class Splits:
    """The examples a run trains on, validates on (pruning, the objective, the champion) and tests on once,
    with what identifies them."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    source: str
    fingerprint: str  # of all three
    validation_fingerprint: str
    test_fingerprint: str


def problems(cfg: DatasetConfig) -> list[str]:
    """Checks that need no data: sizes, paths, prompt."""
    errors = []
    for key in ("train_size", "validation_size", "test_size"):
        value = getattr(cfg, key)
        if value is not None and value <= 0:
            errors.append(f"dataset.{key}={value}: must be a positive number of examples, or null for all")
    if not 0 < cfg.validation_fraction < 1:
        errors.append(
            f"dataset.validation_fraction={cfg.validation_fraction}: the share of train carved out for validation, "
            "between 0 and 1 (e.g. 0.1)"
        )
    if cfg.path is None and not cfg.name:
        errors.append("dataset.path is missing: set dataset.path=/path/to/folder (JSONL, CSV or Parquet files)")
    if cfg.path is not None and not Path(cfg.path).expanduser().exists():
        errors.append(f"dataset.path={cfg.path}: no such file or folder; point it at your data")
    if len(cfg.label_names) < 2:
        errors.append("dataset.label_names: needs at least two class names, e.g. [negative,positive]")
    if "{text}" not in cfg.prompt:
        errors.append(r"dataset.prompt: must contain {text}, e.g. 'Review: {text}\nSentiment:'")
    return errors


def load_splits(cfg: DatasetConfig, cache_dir: Path | None = None) -> Splits:
    """Read the splits (validation carved from train when the data has none), check columns and labels, draw the
    configured sizes. Local files' selections are
    cached in `cache_dir`, keyed by the files' paths, sizes and times and the selection settings."""
    key = _selection_key(cfg) if cache_dir is not None and cfg.path is not None else None
    if key is not None and (cache_dir / f"{key}.json").is_file():
        return _read_selection(cache_dir, key)
    splits = _load(cfg)
    if key is not None:
        _write_selection(cache_dir, key, splits)
    return splits


def _load(cfg: DatasetConfig) -> Splits:
    if cfg.path is not None:
        train, validation, test, source = _read_local(cfg)
    else:
        train, validation, test, source = _read_hub(cfg)
    train = _columns(cfg, train, cfg.train_split)
    test = _draw(cfg, _columns(cfg, test, cfg.test_split), cfg.test_split, cfg.test_size, "test_size")
    if validation is None:
        train, validation = _carve(cfg, train)
    else:
        validation = _columns(cfg, validation, str(cfg.validation_split))
        validation = _draw(cfg, validation, str(cfg.validation_split), cfg.validation_size, "validation_size")
    train = _draw(cfg, train, cfg.train_split, cfg.train_size, "train_size")
    prints = [_fingerprint(frame) for frame in (train, validation, test)]
    return Splits(
        train=train,
        validation=validation,
        test=test,
        source=source,
        fingerprint=hashlib.sha256("".join(prints).encode()).hexdigest()[:16],
        validation_fingerprint=prints[1],
        test_fingerprint=prints[2],
    )


def _carve(cfg: DatasetConfig, train: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A validation set carved from the train split with the run's seed: validation_size examples, else
    validation_fraction of the split; the rest stays train."""
    size = cfg.validation_size or max(1, round(len(train) * cfg.validation_fraction))
    if size >= len(train):
        raise ConfigError(
            f"dataset.validation_size={size}: split '{cfg.train_split}' has only {len(train)} examples to carve a "
            "validation set from; set a smaller dataset.validation_size, or name a validation split with "
            "dataset.validation_split"
        )
    order = train.sample(frac=1.0, random_state=cfg.seed + 1).index  # a stream apart from the train draw
    return train.loc[order[size:]].reset_index(drop=True), train.loc[order[:size]].reset_index(drop=True)


def _selection_key(cfg: DatasetConfig) -> str:
    root = Path(cfg.path).expanduser().resolve()
    files = [root] if root.is_file() else sorted(p for p in root.iterdir() if p.suffix in SUFFIXES)
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    from omegaconf import DictConfig, OmegaConf

    settings = OmegaConf.to_container(cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg), resolve=True)
    for unused in ("prompt", "name", "subset"):  # do not change the selected rows
        settings.pop(unused)
    blob = json.dumps({"files": stats, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _write_selection(cache_dir: Path, key: str, splits: Splits) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}"
    for name in SPLITS:
        tmp = cache_dir / f".{key}.{name}.{tag}.parquet"
        getattr(splits, name).to_parquet(tmp, index=False)
        os.replace(tmp, cache_dir / f"{key}.{name}.parquet")
    meta = {
        "source": splits.source,
        "fingerprint": splits.fingerprint,
        "validation_fingerprint": splits.validation_fingerprint,
        "test_fingerprint": splits.test_fingerprint,
    }
    tmp = cache_dir / f".{key}.{tag}.json"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, cache_dir / f"{key}.json")  # written last: its presence means the parquet files are whole


def _read_selection(cache_dir: Path, key: str) -> Splits:
    import pandas as pd

    meta = json.loads((cache_dir / f"{key}.json").read_text())
    frames = {name: pd.read_parquet(cache_dir / f"{key}.{name}.parquet") for name in SPLITS}
    return Splits(**frames, **meta)


def _read_local(cfg: DatasetConfig) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame, str]:
    """Train, validation (None: to be carved from train) and test frames of dataset.path, and its name."""
    root = Path(cfg.path).expanduser().resolve()
    if root.is_file():
        frame = _read_files([root], "dataset.path")
        holdout = cfg.test_size or max(1, len(frame) // 10)
        frame = frame.sample(frac=1.0, random_state=cfg.seed).reset_index(drop=True)
        if holdout >= len(frame):
            raise ConfigError(
                f"dataset.test_size={holdout}: the file {root} has only {len(frame)} rows; "
                "set a smaller dataset.test_size"
            )
        return frame.iloc[holdout:], None, frame.iloc[:holdout], str(root)
    files = sorted(p for p in root.iterdir() if p.suffix in SUFFIXES)
    if not files:
        raise ConfigError(
            f"dataset.path={cfg.path}: no .jsonl, .json, .csv or .parquet files in {root}; "
            "point it at the folder that holds them"
        )
    found = sorted({p.name.split(".")[0].split("-")[0] for p in files})

    def split_files(key: str, split: str) -> list[Path]:
        chosen = [p for p in files if p.name.split(".")[0].split("-")[0] == split]
        if not chosen:
            raise ConfigError(
                f"dataset.{key}={split}: no file for that split in {root} (found: {', '.join(found)}); "
                f"set dataset.{key} to one of them"
            )
        return chosen

    train = _read_files(split_files("train_split", cfg.train_split), "dataset.path")
    test = _read_files(split_files("test_split", cfg.test_split), "dataset.path")
    validation = None
    if cfg.validation_split:
        validation = _read_files(split_files("validation_split", cfg.validation_split), "dataset.path")
    return train, validation, test, str(root)


def _read_files(paths: list[Path], key: str) -> pd.DataFrame:
    import pandas as pd

    frames = []
    for path in paths:
        kind = SUFFIXES[path.suffix]
        try:
            if path.suffix == ".jsonl":
                import pyarrow.json

                frames.append(pyarrow.json.read_json(path).to_pandas())
            elif kind == "json":
                frames.append(pd.read_json(path))
            elif kind == "csv":
                frames.append(pd.read_csv(path))
            else:
                frames.append(pd.read_parquet(path))
        except (ValueError, OSError) as exc:
            raise ConfigError(f"{key}: cannot read {path} as {kind} ({exc}); fix or remove the file") from exc
    return pd.concat(frames, ignore_index=True)


def _read_hub(cfg: DatasetConfig) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame, str]:
    from sweeps import hub

    if not hub.reachable():
        raise hub.unreachable_error("dataset.name", cfg.name or "")
    import datasets

    try:
        loaded = datasets.load_dataset(cfg.name, cfg.subset)
    except (ConnectionError, FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"dataset.name={cfg.name}: cannot load it from the Hub ({exc})") from exc
    named = [
        ("train_split", cfg.train_split),
        ("validation_split", cfg.validation_split),
        ("test_split", cfg.test_split),
    ]
    for key, split in named:
        if split is not None and split not in loaded:
            raise ConfigError(f"dataset.{key}={split}: '{cfg.name}' has splits {', '.join(loaded)}; pick one of them")
    source = f"hf://datasets/{cfg.name}" + (f"/{cfg.subset}" if cfg.subset else "")
    validation = loaded[cfg.validation_split].to_pandas() if cfg.validation_split else None
    return loaded[cfg.train_split].to_pandas(), validation, loaded[cfg.test_split].to_pandas(), source


def _columns(cfg: DatasetConfig, frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """The split as `text` and `label` columns, its labels checked against dataset.label_names."""
    for column_key in ("text_column", "label_column"):
        column = getattr(cfg, column_key)
        if column not in frame.columns:
            raise ConfigError(
                f"dataset.{column_key}={column}: split '{split}' has no such column "
                f"(columns: {', '.join(map(str, frame.columns))}); set dataset.{column_key} to one of them"
            )
    frame = frame[[cfg.text_column, cfg.label_column]].rename(
        columns={cfg.text_column: "text", cfg.label_column: "label"}
    )
    labels = frame["label"]
    n_classes = len(cfg.label_names)
    bad = labels[~labels.isin(range(n_classes))]
    if len(bad):
        raise ConfigError(
            f"dataset.label_column={cfg.label_column}: split '{split}' has labels outside 0..{n_classes - 1} "
            f"(e.g. {bad.iloc[0]!r}); map them to integers or set dataset.label_names to {n_classes}+ classes"
        )
    frame = frame.reset_index(drop=True)
    frame["label"] = frame["label"].astype("int64")
    frame["text"] = frame["text"].astype(str)
    return frame


def _draw(cfg: DatasetConfig, frame: pd.DataFrame, split: str, size: int | None, key: str) -> pd.DataFrame:
    """`size` examples of the split (all when null), shuffled with the run's seed when dataset.shuffle."""
    if size is not None and size > len(frame):
        raise ConfigError(
            f"dataset.{key}={size}: split '{split}' has only {len(frame)} examples; "
            f"set dataset.{key}<={len(frame)} or null"
        )
    if cfg.shuffle:
        frame = frame.sample(frac=1.0, random_state=cfg.seed)
    if size is not None:
        frame = frame.iloc[:size]
    return frame.reset_index(drop=True)


def _fingerprint(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for text, label in zip(frame["text"], frame["label"], strict=True):
        digest.update(text.encode())
        digest.update(b"\x00%d\x01" % label)
    return digest.hexdigest()[:16]
