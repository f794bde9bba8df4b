#!/usr/bin/env bash
# Sets up .venv: torch first (pinned, so pip takes a locally provided CPU wheel where there is one and
# PyPI's CUDA build elsewhere; SWEEPS_TORCH overrides the spec), then sweeps with its dev extra.
# `./setup.sh test` also installs what the test suite drives: Debian's Chromium for the browser test.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet "${SWEEPS_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
if [ "${1:-}" = "test" ] && ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "setup.sh: the browser test needs Chromium: install Debian's chromium package (as root)" >&2
        exit 1
    fi
fi
echo "sweeps is installed in $(pwd)/.venv"
