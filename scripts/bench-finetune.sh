#!/usr/bin/env bash
# The fine-tuning Short's study on the real SmolLM2-135M GGUF (data/finetune/people-json), 2
# threads: the base model answering the 80 held-out sentences with 0, 3, 10 and 20 training
# examples in its prompt; a LoRA adapter trained for each candidate learning rate, 2e-4 to 8e-3
# (the original demo's 2e-4 with accumulation 4 among them; 100 examples, 3 epochs, batch 4),
# chosen on the 30 validation sentences; the chosen setting trained again with two more seeds.
# Every answer goes into results/finetune-study-<timestamp>.json; the adapters (peft + llama.cpp
# GGUF) go to ~/.cache/billion-llm/runs/people-json-study/, outside the clone. About 45 minutes
# on 2 cores.
# Extra arguments go to `billion-llm finetune-study`.
#   bash scripts/bench-finetune.sh [--seeds 1,2,3 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/fetch-assets.sh >/dev/null
cargo build --release --quiet
data=data/finetune/people-json
RAYON_NUM_THREADS=2 target/release/billion-llm finetune-study \
  --model "$BILLION_LLM_ASSETS/SmolLM2-135M-Instruct.Q4_1.gguf" \
  --data "$data/train.jsonl" --validation "$data/validation.jsonl" --eval "$data/heldout.jsonl" \
  --epochs 3 --batch-size 4 \
  --setting 2e-4:4 --setting 5e-4 --setting 1e-3 --setting 2e-3 --setting 4e-3 --setting 8e-3 \
  --seeds 1,2,3 --shots 0,3,10,20 \
  --out "$HOME/.cache/billion-llm/runs/people-json-study" "$@"
