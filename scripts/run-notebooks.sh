#!/usr/bin/env bash
# Executes every notebook headless with the Rust kernel and fails on any cell error.
#   bash scripts/run-notebooks.sh            run them into a scratch folder (the test)
#   bash scripts/run-notebooks.sh --inplace  run them and save the outputs into notebooks/ (to commit)
# A run fails on a cell error, and also on any output to stderr: evcxr reports an error returned
# with `?`, and a panic, only as stderr text, not as a cell error. The test also fails when a
# committed notebook has a code cell without output: notebooks are committed executed, so they
# read well on GitHub and in JupyterLab before anyone runs them. And it fails when a cell tagged
# `results` (one that shows what results/, the model configs or the published figures hold, not
# a live run) now shows something other than its committed output: the notebook was not re-run
# after what it reads changed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

inplace=no
[ "${1:-}" = "--inplace" ] && inplace=yes

[ "$inplace" = no ] && python3 - <<'PY'
import json, pathlib, sys
bad = []
for path in sorted(pathlib.Path("notebooks").glob("*.ipynb")):
    nb = json.loads(path.read_text())
    if nb["metadata"].get("kernelspec", {}).get("name") != "rust":
        bad.append(f"{path}: kernel is not the Rust kernel (evcxr)")
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and cell.get("execution_count") is None:
            bad.append(f"{path}: a code cell was never executed; run scripts/run-notebooks.sh --inplace")
            break
if bad:
    sys.exit("\n".join(bad))
PY

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cd notebooks
for nb in [0-9]*.ipynb; do
  start=$(date +%s)
  if [ "$inplace" = yes ]; then
    target=(--inplace)
  else
    target=(--output-dir "$out")
  fi
  # Startup can include the first build of the crate for the kernel: allow it time.
  if ! jupyter nbconvert --to notebook --execute "${target[@]}" \
      --ExecutePreprocessor.kernel_name=rust \
      --ExecutePreprocessor.timeout=1800 \
      --ExecutePreprocessor.startup_timeout=1800 \
      "$nb" >"$out/$nb.log" 2>&1; then
    cat "$out/$nb.log" >&2
    echo "notebook $nb failed" >&2
    exit 1
  fi
  executed="$out/$nb"
  [ "$inplace" = yes ] && executed="$nb"
  python3 - "$executed" "$nb" "$inplace" <<'PY'
import json, sys
executed, committed, inplace = sys.argv[1:]
nb = json.load(open(executed))
for cell in nb["cells"]:
    for o in cell.get("outputs", []):
        if o["output_type"] == "error" or (o["output_type"] == "stream" and o["name"] == "stderr"):
            text = o.get("text") or "\n".join(o.get("traceback", []))
            if isinstance(text, list):
                text = "".join(text)
            sys.exit(f"{executed}: a cell wrote an error:\n{''.join(cell['source'])}\n---\n{text}")
if inplace == "yes":
    sys.exit(0)

def shown(cell):
    """What a cell shows, as text: its streams and its rich outputs, in order."""
    parts = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            parts.append("".join(o["text"]) if isinstance(o["text"], list) else o["text"])
        for kind, value in sorted(o.get("data", {}).items()):
            parts.append(kind + ":" + ("".join(value) if isinstance(value, list) else value))
    return "\n".join(parts)

old = json.load(open(committed))["cells"]
for i, (was, now) in enumerate(zip(old, nb["cells"])):
    if "results" in now.get("metadata", {}).get("tags", []) and shown(was) != shown(now):
        sys.exit(
            f"notebooks/{committed}: cell {i} shows something else than its committed output:\n"
            f"{''.join(now['source'])}\n"
            "run 'bash scripts/run-notebooks.sh --inplace' and commit the notebooks"
        )
PY
  echo "notebook $nb ran in $(( $(date +%s) - start )) s"
done
