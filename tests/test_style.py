"""The code base stays ruff clean."""

from __future__ import annotations

import subprocess
import sys

from support import ROOT


def test_ruff_clean() -> None:
    ruff = [sys.executable, "-m", "ruff"]
    done = subprocess.run(
        [*ruff, "check", "src", "launchers", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
