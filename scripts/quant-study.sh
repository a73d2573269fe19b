#!/usr/bin/env bash
# Short 7's run: `billion-llm quant-study` on the two real checkpoints reachable from here,
# SmolLM2-135M-Instruct (shipped as Q4_1) and Gemma 3 270M base (shipped as Q4_K_M). Each is
# dequantized to F32 (the reference), quantized by us to every file type, and each type
# measured: size, KL divergence from the reference over MMLU and HumanEval text, speed beside
# llama.cpp on the same file, and a greedy answer. One results file per model,
# results/quant-study-<timestamp>.json. Then `billion-llm quant-1b`: every type of the four 1B
# architectures (random weights, no download), peak memory with a 2,048-token context and
# speed, into results/quant-1b-<timestamp>.json. About 70 minutes on a 2-core machine; keep the
# machine otherwise idle, as the speed figures share it. Extra arguments go to
# `billion-llm quant-study`.
#   bash scripts/quant-study.sh [--windows 4 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/fetch-assets.sh >/dev/null
cargo build --release --quiet
a="$BILLION_LLM_ASSETS"
work="$HOME/.cache/billion-llm/quant-study"
target/release/billion-llm quant-study --model "$a/SmolLM2-135M-Instruct.Q4_1.gguf" \
  --name SmolLM2-135M-Instruct --work-dir "$work" "$@"
target/release/billion-llm quant-study --model "$a/gemma-3-270m-q4_k_m.gguf" \
  --name "Gemma-3-270M" --work-dir "$work" "$@"
target/release/billion-llm quant-1b
