#!/usr/bin/env bash
# Create .venv (if missing) and install icbpl with its test, benchmark and extra-weights extras
# (the base install alone already runs the default `icbpl cluster` offline).
# torch/torchvision are pinned to the releases this project is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[weights,dev,bench]"
