#!/usr/bin/env bash
# Short 6's measurements on this machine, one command after another (nothing else should run):
# 1. speculative-bench: the real SmolLM2-135M GGUF decoding four kinds of request (edits,
#    rewrites, code changes, open questions; three prompts each, pooled) with prompt lookup at
#    K = 1, 2, 4, 8, Hugging Face's adaptive K and K chosen by measured cost, and with its own
#    first 24 layers at K = 1 and by cost; plain and speculative decoding take turns, 5 pairs
#    each (about 15 minutes on 2 cores); then prompt lookup's ceiling per request, K chosen in
#    hindsight over the plain greedy answers, priced with forward times timed first
#    -> results/speculative-bench-<timestamp>.json
# 2. speculative-costs on SmolLM2 (drafting for itself: v(K), the cost of verifying K + 1
#    tokens in target steps) and on TinyLlama drafting for Llama 2 7B (their real configs with
#    random q4_0 weights: 5.4 GB, no download) -> results/speculative-costs-<timestamp>.json
#   bash scripts/bench-speculative.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/fetch-assets.sh >/dev/null
cargo build --release --quiet
bin="target/release/billion-llm"
model="$BILLION_LLM_ASSETS/SmolLM2-135M-Instruct.Q4_1.gguf"
"$bin" speculative-bench --target "$model" --draft lookup --draft layers:24@1,cost \
  --schedules 1,2,4,8,adaptive,cost --repetitions 5
"$bin" speculative-costs --target "$model" --draft "$model" --k 1,2,4,8 --runs 15
"$bin" speculative-costs --target llama-2-7b-chat --draft tinyllama --weights random \
  --quantize q4_0 --k 1,2,4,8
