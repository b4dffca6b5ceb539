#!/usr/bin/env bash
# One-step setup: creates .venv, installs cvserve (editable) with its pins and the dev tools.
# Idempotent: re-running skips what is already installed. Fails loudly naming the broken step.
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CVSERVE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
STEP="start"
trap 'echo "cvserve setup FAILED at step: $STEP (see the output above)" >&2' ERR

step() { STEP="$1"; echo "==> $1"; }

step "check Python 3.11"
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "cvserve needs Python 3.11 (the Triton python-backend stub is built per version)" >&2; false; }

step "create virtualenv $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

step "install cvserve and pinned dependencies (torch is large: the first run downloads it once)"
"$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24" setuptools wheel
"$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]"

step "check NumPy < 2 (the Triton 2.51 python stub corrupts tensors under NumPy 2)"
"$VENV/bin/python" -c 'import numpy, sys; sys.exit(0 if int(numpy.__version__.split(".")[0]) < 2 else f"numpy {numpy.__version__} >= 2")'

step "check imports (cvserve, DALI, tritonclient, torch, tritonserver binary)"
"$VENV/bin/python" -m cvserve.deploy.doctor

echo "cvserve setup done: activate with 'source $VENV/bin/activate' or run '$VENV/bin/cvserve'"
