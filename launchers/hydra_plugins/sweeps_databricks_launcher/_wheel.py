"""The project's wheel, built once per source-tree content and cached under outputs/cache/wheels."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# What the wheel is built from, relative to the project root.
SOURCES = ("pyproject.toml", "README.md", "setup.cfg", "setup.py", "MANIFEST.in", "src", "launchers", "conf")
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info")


def project_root() -> Path | None:
    """The source tree this launcher was loaded from (the folder with pyproject.toml), None for an install."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    return None


def _files(root: Path) -> list[Path]:
    files = []
    for name in SOURCES:
        top = root / name
        if top.is_file():
            files.append(top)
        elif top.is_dir():
            for folder, dirs, names in os.walk(top):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(SKIP_SUFFIXES))
                files += [Path(folder) / n for n in sorted(names) if not n.endswith(SKIP_SUFFIXES)]
    return files


def digest(root: Path) -> str:
    """A hash of the files the wheel is built from (paths and contents)."""
    h = hashlib.sha256()
    for path in _files(root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def build(root: Path, cache: Path) -> Path:
    """The wheel of the project at `root` for its current content, built (pip wheel) unless cached."""
    key = digest(root)
    target = cache / key
    built = sorted(target.glob("*.whl")) if target.is_dir() else []
    if built:
        return built[0]
    log.info(f"Building the wheel of {root}")
    with tempfile.TemporaryDirectory(prefix="sweeps_wheel_") as tmp:
        source = Path(tmp) / "src"
        for path in _files(root):
            destination = source / path.relative_to(root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
        out = Path(tmp) / "dist"
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)]
        if _has_setuptools():
            command.insert(5, "--no-build-isolation")  # no download of a build environment
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = sorted(out.glob("*.whl"))
        if done.returncode != 0 or not wheels:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            raise RuntimeError(f"building the wheel of {root} failed (pip wheel, exit {done.returncode}):\n{tail}")
        target.mkdir(parents=True, exist_ok=True)
        final = target / wheels[0].name
        partial = target / f".{wheels[0].name}.{os.getpid()}"
        shutil.copy2(wheels[0], partial)
        os.replace(partial, final)  # whole, even when another sweep builds the same wheel
    return final


def _has_setuptools() -> bool:
    import importlib.util

    return importlib.util.find_spec("setuptools") is not None


def file_digest(path: Path) -> str:
    """A hash of the wheel file, naming its folder on the volume (clusters cache libraries by path)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
