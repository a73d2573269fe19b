"""peft side by side with `billion-llm finetune`: the same adapter, the same batch, the same numbers.

1. `finetune` trains a LoRA adapter (r 8, alpha 16, q_proj and v_proj) on the SmolLM2 GGUF for two
   steps, each over the same batch of four examples of the Short's data, and records each step's
   loss and gradient norm; its checkpoint after the first step holds non-zero A and B.
2. peft loads that checkpoint over the same weights (transformers dequantizes the GGUF to f32,
   as `finetune` does), computes the loss of the batch (the answer tokens' mean cross-entropy)
   and its gradients: both must equal what `finetune` recorded for the second step.
3. peft loads the final adapter and computes the logits of an example; `billion-llm logits` does
   the same with that adapter over the same weights saved in Hugging Face layout: every logit
   must match.

Skipped, with a message saying how to run it, where torch, transformers or peft are missing.
Run by scripts/bench-finetune-speed.sh inside its torch venv, or:
    VENV/bin/python scripts/check_peft_interop.py --binary target/release/billion-llm --gguf FILE
Exits 1 when a number differs beyond its tolerance; prints one JSON object either way.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import peft
    import safetensors.torch
    import torch
    import transformers
except ImportError as missing:
    print(
        f"skipped: {missing.name} is not installed here. Run scripts/bench-finetune-speed.sh, "
        "which installs torch, transformers 5.17 and peft 0.21 into its venv and runs this check."
    )
    sys.exit(0)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_peft import conversations, tokenize  # noqa: E402

DATA = "data/finetune/people-json/train.jsonl"
EXAMPLES = 4
# f32 on both sides, but each dequantizes the GGUF's Q4_1 blocks itself (gguf-py for
# transformers) and sums in its own order: the loss and gradient norm agree to about 2e-4 of
# their size. A masking or scaling mistake moves them by far more.
LOSS_RTOL = 5e-4
GRAD_RTOL = 1e-3
# Over the same f32 tensors (the Hugging Face folder): logits of size ~20 agree to ~2e-4.
LOGITS_ATOL = 1e-3


def run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{done.stderr}")
    return done.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gguf = Path(args.gguf)
    # The Hugging Face copy of the weights is ~0.5 GB of f32: removed at the end.
    with tempfile.TemporaryDirectory(prefix="peft-interop-") as tmp:
        check(args, gguf, Path(tmp))


def check(args, gguf, work):
    lines = Path(DATA).read_text().splitlines()[:EXAMPLES]
    batch_file = work / "batch.jsonl"
    batch_file.write_text("\n".join(lines) + "\n")

    # 1. Two steps over one batch of every example (the batch order cannot differ).
    adapter = work / "adapter"
    run([
        args.binary, "finetune", "--model", gguf, "--data", batch_file,
        "--eval-fraction", "0", "--answer-limit", "0", "--epochs", "2",
        "--batch-size", str(EXAMPLES), "--grad-accum", "1", "--lr", "1e-3",
        "--warmup-ratio", "0", "--out", adapter, "--results-dir", work,
    ])
    [results] = work.glob("finetune-*.json")
    steps = json.loads(results.read_text())["steps"]
    ours = {"loss": steps[1]["loss"], "grad_norm": steps[1]["grad_norm"]}
    transformers.logging.disable_progress_bar()

    # 2. peft's loss and gradient norm with the adapter after the first step.
    tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)

    def base():
        return transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )

    model = peft.PeftModel.from_pretrained(
        base(), adapter / "checkpoint-epoch-1", is_trainable=True
    )
    loss_sum, targets = torch.zeros(()), 0
    for conv in conversations(batch_file):
        ids, prompt_len = tokenize(tok, conv, 512)
        labels = [-100] * prompt_len + ids[prompt_len:]
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
        target = torch.tensor(labels[1:])
        loss_sum = loss_sum + torch.nn.functional.cross_entropy(
            logits, target, ignore_index=-100, reduction="sum"
        )
        targets += int((target != -100).sum())
    loss = loss_sum / targets
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n and p.grad is not None]
    theirs = {
        "loss": loss.item(),
        "grad_norm": torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item(),
    }

    # 3. Logits of the final adapter: peft over the GGUF's weights, ours over the same weights
    # saved as a Hugging Face folder.
    folder = work / "hf"
    folder.mkdir()
    # save_pretrained refuses a model loaded from GGUF: write its f32 tensors and config.
    plain = base()
    config = plain.config.to_dict()
    config.pop("quantization_config", None)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    tensors = {k: v.contiguous() for k, v in plain.state_dict().items()}
    if plain.config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    safetensors.torch.save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    tok.save_pretrained(folder)
    ids, _ = tokenize(tok, conversations(batch_file)[0], 512)
    with torch.no_grad():
        final = peft.PeftModel.from_pretrained(base(), adapter)
        peft_logits = final(input_ids=torch.tensor([ids])).logits[0]
    out = run([
        args.binary, "logits", "--model", folder, "--adapter", adapter,
        "--ids", ",".join(map(str, ids)),
    ])
    our_logits = torch.tensor(json.loads(out)["logits"])
    logits_diff = (our_logits - peft_logits).abs().max().item()

    checks = {
        "loss": abs(ours["loss"] - theirs["loss"]) <= LOSS_RTOL * abs(theirs["loss"]),
        "grad_norm": abs(ours["grad_norm"] - theirs["grad_norm"])
        <= GRAD_RTOL * theirs["grad_norm"],
        "logits": logits_diff <= LOGITS_ATOL,
    }
    print(json.dumps({
        "finetune": ours,
        "peft": theirs,
        "max_abs_logit_difference": logits_diff,
        "positions": len(ids),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__},
        "passed": checks,
    }, indent=1))
    if not all(checks.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
