#!/usr/bin/env bash
# The speed benchmark's setup and run: installs llama-cpp-python (llama.cpp, the peer we compare
# against) when missing, then runs `billion-llm bench-speed`, which writes results/speed-*.json.
# Run it on a quiet machine: anything else running skews both engines.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/fetch-assets.sh >/dev/null
bash scripts/install-llama-cpp.sh
cargo run --release -- bench-speed "$@"
