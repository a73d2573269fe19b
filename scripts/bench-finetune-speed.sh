#!/usr/bin/env bash
# Training speed of `billion-llm finetune` against peft + torch on the same run, engines taking
# turns (scripts/bench_finetune_speed.py says how). Installs torch, transformers, peft and gguf
# into a venv (default ~/.cache/billion-llm/reference-venv, the one scripts/make-reference.py
# uses; ~6 GB, so outside CI) when missing.
# First checks, in that venv, that peft agrees with `finetune` on the same adapter and batch
# (loss, gradient norm, logits: scripts/check_peft_interop.py). Writes
# results/train-speed-<timestamp>.json.
#   bash scripts/bench-finetune-speed.sh [--turns 3]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/fetch-assets.sh >/dev/null
cargo build --release --quiet
venv="${REFERENCE_VENV:-$HOME/.cache/billion-llm/reference-venv}"
if ! "$venv/bin/python" -c "import torch, transformers, peft, gguf" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch 'transformers==5.17.*' 'peft==0.21.*' gguf
fi
"$venv/bin/python" scripts/check_peft_interop.py --binary target/release/billion-llm \
  --gguf "$BILLION_LLM_ASSETS/SmolLM2-135M-Instruct.Q4_1.gguf"
python3 scripts/bench_finetune_speed.py --binary target/release/billion-llm \
  --python "$venv/bin/python" --gguf "$BILLION_LLM_ASSETS/SmolLM2-135M-Instruct.Q4_1.gguf" "$@"
