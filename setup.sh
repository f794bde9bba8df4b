#!/usr/bin/env bash
# Sets up .venv: torch first (pinned, so pip takes a locally provided CPU wheel where there is one and
# PyPI's CUDA build elsewhere; SWEEPS_TORCH overrides the spec), then sweeps with its dev extra.
# `./setup.sh test` also installs what the test suite drives: Debian's Chromium and a Java runtime.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet "${SWEEPS_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
# Debian packages the tests drive: Chromium (the MLflow UI test) and a Java runtime (local Spark).
missing=()
if [ "${1:-}" = "test" ]; then
    command -v chromium >/dev/null || missing+=(chromium)
    command -v java >/dev/null || missing+=(default-jre-headless)
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup.sh: the tests need Debian's ${missing[*]} packages: install them (as root)" >&2
        exit 1
    fi
fi
echo "sweeps is installed in $(pwd)/.venv"
