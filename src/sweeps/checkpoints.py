"""A run's training-state checkpoints: what one holds, how it is written (atomically) and read back (verified).

`<run dir>/checkpoints/step-<N>/` holds `model.pt` (the model's whole state dict), `training.pt` (optimizer,
schedule, every RNG, the data position, the loop's counters, the evaluations so far, early stopping's state) and,
written last, `manifest.json` (the step, each file's size and SHA-256, the run's training config and MLflow run).
A checkpoint is built in a hidden temporary folder, every file and the folder fsynced, then renamed into place:
a kill mid-write leaves a temporary folder (removed by the next save), never a checkpoint that loads wrong; one
whose files do not match their manifest (a truncated disk write) is passed over for the one before. The newest
`checkpoint_keep` are kept. With early stopping, `best-<N>/` holds the best evaluation's weights.
`checkpoints/finished` marks a run that ended (finished or pruned): nothing to resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FINISHED = "finished"
STEP = "step"  # training-state checkpoints: step-<N>
BEST = "best"  # the best evaluation's weights: best-<N>


@dataclass
class TrainingState:
    """Where a run stands after an optimizer step: what `fit` continues from."""

    step: int = 0
    # batches this rank has taken from its batch iterator (step * grad_accum_steps: checkpoints are written
    # between steps, so no micro-batch of a step is ever half accumulated)
    batches: int = 0
    tokens: int = 0  # this rank's real and padded tokens so far, and the training seconds (evaluation left out)
    padded: int = 0
    seconds: float = 0.0
    stopped: bool = False  # early stopping ended the run at `step`
    history: list[dict] = field(default_factory=list)  # the evaluations so far
    early_stopping: dict = field(default_factory=dict)
    rng: dict = field(default_factory=dict)


@dataclass
class Loaded:
    """A checkpoint read back and verified."""

    path: Path
    manifest: dict
    model: dict  # the state dict
    training: dict  # optimizer, scheduler and TrainingState fields

    @property
    def step(self) -> int:
        return int(self.manifest["step"])

    def state(self) -> TrainingState:
        known = TrainingState.__dataclass_fields__
        return TrainingState(**{k: v for k, v in self.training.items() if k in known})


def rng_state() -> dict[str, Any]:
    """Every random generator a run draws from: Python's, NumPy's global, torch's CPU and CUDA ones."""
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpoints:
    """The checkpoints folder of one run dir."""

    def __init__(self, run_dir: Path, keep: int = 2) -> None:
        self.root = Path(run_dir) / "checkpoints"
        self.keep = keep

    # ---------------------------------------------------------------- writing
    def save(self, step: int, model: dict, training: dict, meta: dict) -> Path:
        """Checkpoint `step`: the model's state dict, the training state, `meta` in the manifest; older ones
        beyond `keep` removed."""
        path = self._commit(STEP, step, {"model.pt": model, "training.pt": training}, meta)
        self._prune(STEP, self.keep)
        return path

    def save_best(self, step: int, model: dict, meta: dict) -> Path:
        """The best evaluation's weights (the previous best removed once this one is in place)."""
        path = self._commit(BEST, step, {"model.pt": model}, meta)
        self._prune(BEST, 1)
        return path

    def mark_finished(self, meta: dict) -> None:
        """The run ended (finished or pruned): `resume=auto` passes it over."""
        self.root.mkdir(parents=True, exist_ok=True)
        _write_bytes(self.root / FINISHED, json.dumps(meta).encode())

    def _commit(self, prefix: str, step: int, files: dict[str, Any], meta: dict) -> Path:
        import torch

        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".tmp-*"):  # left by a run killed mid-write
            shutil.rmtree(stale, ignore_errors=True)
        final = self.root / f"{prefix}-{step:08d}"
        tmp = self.root / f".tmp-{prefix}-{step:08d}-{os.getpid()}"
        tmp.mkdir()
        listed = {}
        for name, obj in files.items():
            with open(tmp / name, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            listed[name] = {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
        manifest = {"step": step, "files": listed, **meta}
        _write_bytes(tmp / MANIFEST, json.dumps(manifest, indent=1, default=str).encode())
        _fsync_dir(tmp)
        if final.exists():  # the same step written again (a resumed run's last step): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(self.root)
        return final

    def _prune(self, prefix: str, keep: int) -> None:
        for old in self._listed(prefix)[keep:]:
            shutil.rmtree(old, ignore_errors=True)

    # ---------------------------------------------------------------- reading
    def _listed(self, prefix: str) -> list[Path]:
        """The checkpoints of a kind, newest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.glob(f"{prefix}-*") if p.is_dir() and p.name[len(prefix) + 1 :].isdigit()]
        return sorted(found, key=lambda p: int(p.name[len(prefix) + 1 :]), reverse=True)

    def finished(self) -> bool:
        return (self.root / FINISHED).is_file()

    def manifests(self) -> list[tuple[Path, dict]]:
        """The training-state checkpoints' manifests, newest first (unverified: cheap to read)."""
        found = []
        for path in self._listed(STEP):
            try:
                found.append((path, json.loads((path / MANIFEST).read_text())))
            except (OSError, ValueError):
                continue
        return found

    def latest(self) -> Loaded | None:
        """The newest training-state checkpoint whose files match their manifest; one that does not is logged and
        passed over for the one before."""
        return self._first_valid(STEP)

    def best(self) -> Loaded | None:
        return self._first_valid(BEST)

    def _first_valid(self, prefix: str) -> Loaded | None:
        for path in self._listed(prefix):
            problem = verify(path)
            if problem is None:
                return _load(path)
            log.warning("checkpoint %s is unusable (%s); trying the one before", path, problem)
        return None


def verify(path: Path) -> str | None:
    """None when the checkpoint's files are all there with the size and hash its manifest gives, else what is
    wrong."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError) as exc:
        return f"no readable manifest: {exc}"
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != expected["bytes"]:
            return f"{name} has {file.stat().st_size} bytes, not {expected['bytes']}"
        if _sha256(file) != expected["sha256"]:
            return f"{name} does not match its SHA-256"
    return None


def _load(path: Path) -> Loaded:
    import torch

    manifest = json.loads((path / MANIFEST).read_text())
    # our own files, verified against their manifest: they hold NumPy arrays and RNG tuples beside tensors
    parts = {name: torch.load(path / name, map_location="cpu", weights_only=False) for name in manifest["files"]}
    return Loaded(path, manifest, parts["model.pt"], parts.get("training.pt", {}))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_bytes(path: Path, data: bytes) -> None:
    """Write `path` through a temporary file, fsynced, renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
