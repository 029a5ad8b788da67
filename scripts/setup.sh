#!/usr/bin/env bash
# Create .venv (if missing) and install icbpl with its test, benchmark and extra-weights extras
# (the base install alone already runs the default `icbpl cluster` offline).
# torch/torchvision are pinned to the releases this project is tested with.
# Prints each step with its elapsed time, and pip's own download / install progress: the torch
# step downloads several GB with its CUDA libraries on Linux and takes the longest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STEPS=4
step() {
  printf '\n==> setup step %s/%s: %s (elapsed %ss)\n' "$1" "$STEPS" "$2" "$SECONDS"
}

step 1 "virtual environment .venv"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  echo "created .venv with $("$PY" --version 2>&1)"
else
  echo "reusing the existing .venv ($(.venv/bin/python --version 2>&1))"
fi

step 2 "upgrading pip"
.venv/bin/python -m pip install --upgrade pip --progress-bar on || echo "(pip upgrade failed; continuing with the installed pip)"

step 3 "torch 2.14.1 and torchvision 0.29.1 (the largest download)"
.venv/bin/python -m pip install --progress-bar on "torch==2.14.1" "torchvision==0.29.1"

step 4 "icbpl and its extras [weights,dev,bench] (editable)"
.venv/bin/python -m pip install --progress-bar on -e ".[weights,dev,bench]"

printf '\n==> setup done in %ss; try: .venv/bin/icbpl demo\n' "$SECONDS"
