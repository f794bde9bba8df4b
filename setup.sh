#!/usr/bin/env bash
# Sets up .venv: torch first (pinned, so pip takes a locally provided CPU wheel where there is one and
# PyPI's CUDA build elsewhere; SWEEPS_TORCH overrides the spec), then sweeps with its dev extra.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet "${SWEEPS_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "sweeps is installed in $(pwd)/.venv"
