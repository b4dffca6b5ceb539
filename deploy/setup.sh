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
