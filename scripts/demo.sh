#!/usr/bin/env bash
# The main job, offline, on the real data bundled in the package: set up, then `medvlp demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/medvlp demo "$@"
