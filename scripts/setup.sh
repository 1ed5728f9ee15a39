#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) with everything medvlp needs.
# Re-running is cheap: it reinstalls only when pyproject.toml or this script changed.
#
# torch and torchvision are pinned as a pair: it is the pair whose wheels import together here
# (a newer torchvision beside an older torch fails with "operator torchvision::nms does not
# exist"). The PyPI build of this pair includes CUDA, so the same install runs on CPU and GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_PIN="torch==2.14.1"
TORCHVISION_PIN="torchvision==0.29.1"
VENV="${MEDVLP_VENV:-.venv}"
PY="${PYTHON:-python3}"

stamp="$VENV/.medvlp-setup-stamp"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "medvlp setup: preparing $VENV (first run takes a few minutes: torch is large)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "$TORCH_PIN" "$TORCHVISION_PIN"
"$VENV/bin/python" -m pip install -q -e ".[medical,export,text,imagenet,dev]" "$TORCH_PIN" "$TORCHVISION_PIN"
echo "$want" > "$stamp"
echo "medvlp setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))" >&2
