#!/usr/bin/env bash
# The speed benchmark's setup and run: installs llama-cpp-python (llama.cpp, the peer we compare
# against) when missing, then runs `billion-llm bench-speed`, which writes results/speed-*.json:
# SmolLM2-135M in the shipped Q4_1 and in Q4_K_M and Q6_K, Gemma 3 270M in its shipped Q4_K_M,
# TinyLlama's shape in q4_0 and Q4_K_M
# (the K files made by llama.cpp's own quantizer), at 64- and 512-token prompts with 2 threads
# and 1, and TinyLlama in f32 once (about 40 minutes on a 2-core machine; `--only Q4_K_M` runs
# the cases whose label contains that text).
# Run it on a quiet machine: anything else running skews both engines.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/fetch-assets.sh >/dev/null
bash scripts/install-llama-cpp.sh
cargo run --release -- bench-speed "$@"
