#!/usr/bin/env bash
# The speed benchmark's setup and run: installs llama-cpp-python (llama.cpp, the peer we compare
# against) when missing, then runs `billion-llm bench-speed`, which writes results/speed-*.json:
# SmolLM2-135M Q4_1 and TinyLlama's shape in q4_0 at 64- and 512-token prompts with 2 threads
# and 1, and TinyLlama in f32 once (about 13 minutes on a 2-core machine).
# Run it on a quiet machine: anything else running skews both engines.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/fetch-assets.sh >/dev/null
bash scripts/install-llama-cpp.sh
cargo run --release -- bench-speed "$@"
