#!/usr/bin/env bash
# One-step setup: creates .venv (or $CVSERVE_VENV) with Python 3.12, else 3.11, and installs
# cvserve (editable) with its pins and the dev tools.
# Idempotent: re-running skips what is already installed. Fails loudly naming the broken step.
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CVSERVE_VENV:-$ROOT/.venv}"
STEP="start"
trap 'echo "cvserve setup FAILED at step: $STEP (see the output above)" >&2' ERR

step() { STEP="$1"; echo "==> $1"; }

# cvserve runs on Python 3.11 and 3.12: the pytriton wheel ships a python-backend stub for each,
# and Triton is given the stub of the Python that launches it (cvserve.deploy.triton_install).
# "3.X" of an interpreter that runs (a pyenv shim of a version not selected exits non-zero).
py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
supported() { [ "$1" = 3.11 ] || [ "$1" = 3.12 ]; }

step "choose Python 3.12 or 3.11 (PYTHON=... overrides)"
if [ -n "${PYTHON:-}" ]; then
  PYTHON_GIVEN=1
  PY_VERSION="$(py_version "$PYTHON")" \
    || { echo "cvserve needs Python 3.11 or 3.12: PYTHON=$PYTHON does not run" >&2; false; }
else
  PYTHON_GIVEN=0
  PY_VERSION=""
  for candidate in python3.12 python3.11 python3; do
    version="$(py_version "$candidate")" || continue
    if supported "$version"; then PYTHON="$candidate" PY_VERSION="$version"; break; fi
  done
  [ -n "$PY_VERSION" ] \
    || { echo "cvserve needs Python 3.11 or 3.12: none of python3.12, python3.11, python3 runs one (set PYTHON=...)" >&2; false; }
fi
supported "$PY_VERSION" \
  || { echo "cvserve needs Python 3.11 or 3.12: $PYTHON is Python $PY_VERSION (the Triton python-backend stub is built per version)" >&2; false; }
# Re-running setup keeps an existing environment's Python, if it is a supported one; an explicit
# PYTHON of another version is refused rather than silently ignored.
if [ -x "$VENV/bin/python" ]; then
  VENV_VERSION="$(py_version "$VENV/bin/python")" \
    || { echo "cvserve setup: $VENV/bin/python does not run: remove $VENV and re-run" >&2; false; }
  supported "$VENV_VERSION" \
    || { echo "cvserve needs Python 3.11 or 3.12: $VENV has Python $VENV_VERSION (remove it and re-run)" >&2; false; }
  if [ "$VENV_VERSION" != "$PY_VERSION" ]; then
    [ "$PYTHON_GIVEN" = 0 ] \
      || { echo "cvserve setup: $VENV has Python $VENV_VERSION but PYTHON=$PYTHON is $PY_VERSION: remove $VENV or set CVSERVE_VENV" >&2; false; }
    echo "    $VENV has Python $VENV_VERSION: keeping it (remove it to switch to $PY_VERSION)"
  fi
  echo "    Python $VENV_VERSION ($VENV/bin/python)"
else
  echo "    Python $PY_VERSION ($PYTHON)"
fi

step "create virtualenv $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

step "install cvserve and pinned dependencies (torch is large: the first run downloads it once)"
"$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24" setuptools wheel
# Runtime dependencies, plus the extras: ngc (ONNX export), test (the suite), dev (ruff).
"$VENV/bin/python" -m pip install --quiet -e "$ROOT[ngc,test,dev]"

step "check NumPy < 2 (the Triton 2.51 python stub corrupts tensors under NumPy 2)"
"$VENV/bin/python" -c 'import numpy, sys; sys.exit(0 if int(numpy.__version__.split(".")[0]) < 2 else f"numpy {numpy.__version__} >= 2")'

# The same place cvserve.deploy.kafka.kafka_home() reads, wherever cvserve is installed.
KAFKA_LIBS="${CVSERVE_KAFKA_HOME:-$VENV/share/cvserve/kafka}/libs"
step "fetch the Apache Kafka broker with Maven into $KAFKA_LIBS (runs on Java 17)"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/deploy/kafka/pom.xml")"
if [ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]; then
  echo "    Kafka $KAFKA_VERSION already in $KAFKA_LIBS"
else
  java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])' \
    || { echo "the Kafka broker needs Java 17 or newer (apt-get install openjdk-17-jre-headless)" >&2; false; }
  command -v mvn >/dev/null || { echo "fetching Kafka needs Maven (apt-get install maven)" >&2; false; }
  rm -rf "$KAFKA_LIBS"
  mvn -q -f "$ROOT/deploy/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS"
fi

step "check imports (cvserve, DALI, tritonclient, torch, tritonserver binary)"
"$VENV/bin/python" -m cvserve.deploy.doctor

echo "cvserve setup done: activate with 'source $VENV/bin/activate' or run '$VENV/bin/cvserve'"
