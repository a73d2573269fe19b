#!/usr/bin/env bash
# Speculative decoding on the real SmolLM2-135M GGUF: prompt lookup and layer skipping, K in
# {1, 2, 4, 8} and adaptive, on prompts where drafting should help (the answer copies the
# prompt) and where it should not (an open question). Every run decodes the target plainly too,
# in the same process, so each speedup is a same-run ratio. Writes one combined file,
# results/speculative-bench-<timestamp>.json.
#   bash scripts/bench-speculative.sh [MAX_NEW_TOKENS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/fetch-assets.sh >/dev/null
cargo build --release --quiet
bin="target/release/billion-llm"
model="$BILLION_LLM_ASSETS/SmolLM2-135M-Instruct.Q4_1.gguf"
new="${1:-96}"
runs="$(mktemp -d)"
trap 'rm -rf "$runs"' EXIT

declare -A prompts=(
  [edit]="Fix the spelling mistakes in this text and return the whole text otherwise unchanged: The quick brown fox jumpd over the lazy dog. The dog did not move, and the fox ran into the forest to find its famly before the night fell."
  [code]="Rename the variable x to total in this Python function and return the whole function: def add_all(values):
    x = 0
    for v in values:
        x = x + v
    return x"
  [open]="What should I think about before adopting a dog?"
)
for task in edit code open; do
  for draft in lookup layers:24; do
    for k in 1 2 4 8 adaptive; do
      if [ "$k" = adaptive ]; then kargs=(--k 2 --adaptive); else kargs=(--k "$k"); fi
      "$bin" speculative --target "$model" --draft "$draft" "${kargs[@]}" --chat \
        --prompt "${prompts[$task]}" --max-new-tokens "$new" --results-dir "$runs/$task" --json >/dev/null
      echo "$task $draft k=$k: $(python3 -c "import json,glob;r=json.load(open(sorted(glob.glob('$runs/$task/*.json'))[-1]));s=r['summary'];print(f\"acceptance {s['acceptance_rate']:.2f}, {s['speedup']:.2f}x\")")"
    done
  done
done
python3 - "$runs" <<'PY'
import glob, json, os, sys, time
runs = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*", "*.json"))):
    r = json.load(open(path))
    r["task"] = os.path.basename(os.path.dirname(path))
    r["summary"].pop("tokens"); r["summary"].pop("text")
    runs.append(r)
stamp = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime())
out = f"results/speculative-bench-{stamp}.json"
json.dump({"runs": runs}, open(out, "w"), indent=1)
print("wrote", out)
PY
