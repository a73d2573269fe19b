"""Training speed of `billion-llm finetune` against peft + torch on the same run, the engines
taking turns: one epoch of data/finetune/person-json (100 examples, batches of 4, one step
each; the Short's earlier data, which the recorded result used) on the SmolLM2-135M GGUF, 2 threads each, `--turns` times, alternating which goes first.
Each turn is a fresh process of each engine. The ratio is taken turn by turn; the results file
holds every turn, the median ratio and its spread. Writes results/train-speed-<timestamp>.json.

Run by scripts/bench-finetune-speed.sh (which builds the binary and the torch venv):
    python3 scripts/bench_finetune_speed.py --binary B --python VENV_PYTHON --gguf FILE
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = "data/finetune/person-json/train.jsonl"


def ours(binary, gguf, threads, work):
    """One epoch with `billion-llm finetune`; its results file's speed and steps."""
    results = Path(work) / "results"
    cmd = [binary, "finetune", "--model", gguf, "--data", DATA, "--eval-fraction", "0",
           "--answer-limit", "0", "--epochs", "1", "--batch-size", "4", "--grad-accum", "1",
           "--lr", "1e-3", "--out", str(Path(work) / "adapter"), "--overwrite",
           "--results-dir", str(results)]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    [path] = list(results.glob("finetune-*.json"))
    run = json.loads(path.read_text())
    path.unlink()
    steps = run["steps"]
    return {
        "train_tokens_per_s": run["train_tokens_per_s"],
        "train_seconds": sum(s["seconds"] for s in steps),
        "train_tokens": sum(s["input_tokens"] for s in steps),
        "losses": [s["loss"] for s in steps],
        "header": {k: run[k] for k in ("git_commit", "instruction_set", "hardware")},
    }


def peft(python, gguf, threads):
    """One epoch with peft + torch (scripts/finetune_peft.py)."""
    cmd = [python, "scripts/finetune_peft.py", "--gguf", gguf, "--data", DATA,
           "--epochs", "1", "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    run = json.loads(out.strip().splitlines()[-1])
    return {
        "train_tokens_per_s": run["train_tokens_per_s"],
        "train_seconds": run["train_seconds"],
        "train_tokens": run["train_tokens"],
        "losses": [s["loss"] for s in run["steps"]],
        "versions": run["versions"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--results-dir", default="results")
    args = ap.parse_args()

    turns = []
    for turn in range(args.turns):
        order = ["ours", "peft"] if turn % 2 == 0 else ["peft", "ours"]
        got = {}
        for engine in order:
            with tempfile.TemporaryDirectory() as work:
                if engine == "ours":
                    got[engine] = ours(args.binary, args.gguf, args.threads, work)
                else:
                    got[engine] = peft(args.python, args.gguf, args.threads)
            print(f"turn {turn + 1}: {engine} {got[engine]['train_tokens_per_s']:.1f} tokens/s",
                  file=sys.stderr)
        if got["ours"]["train_tokens"] != got["peft"]["train_tokens"]:
            sys.exit(f"the engines trained on different tokens: {got['ours']['train_tokens']} "
                     f"vs {got['peft']['train_tokens']}")
        turns.append({"first": order[0], "ours": got["ours"], "peft": got["peft"],
                      "ratio": got["ours"]["train_tokens_per_s"]
                      / got["peft"]["train_tokens_per_s"]})

    ratios = [t["ratio"] for t in turns]
    header = turns[0]["ours"]["header"]
    now = time.gmtime()
    stamp = time.strftime("%Y-%m-%dT%H-%M-%SZ", now)
    report = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", now),
        **header,
        "threads": args.threads,
        "model": Path(args.gguf).name,
        "data": DATA,
        "run": "1 epoch, batch 4, grad accumulation 1, lr 1e-3, LoRA r 8 alpha 16 on q_proj "
               "and v_proj, AdamW, linear warm-up 3% then decay, clip 1.0",
        "peer": turns[0]["peft"]["versions"],
        "tokens_per_s": {
            "ours_median": statistics.median(t["ours"]["train_tokens_per_s"] for t in turns),
            "peft_median": statistics.median(t["peft"]["train_tokens_per_s"] for t in turns),
        },
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "turns": turns,
    }
    out = Path(args.results_dir) / f"train-speed-{stamp}.json"
    tmp = out.with_suffix(".json.partial")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.rename(out)
    print(f"ours / peft: median {report['ratio_median']:.2f} (turns {min(ratios):.2f} to "
          f"{max(ratios):.2f}); wrote {out}")


if __name__ == "__main__":
    main()
