"""The fine-tuning Short's LoRA run with peft + torch, the engine a learner would otherwise use,
timed the way `billion-llm finetune` times itself; prints one JSON object.

The same GGUF (dequantized to f32 by transformers, as `finetune` dequantizes it), the same
examples rendered with the model's chat template (answer tokens trained, the rest labelled
-100), the same LoRA (r 8, alpha 16, q_proj and v_proj, no dropout) and optimizer (AdamW,
linear warm-up over 3% of the steps then linear decay, clipping at 1.0), one step per batch.
Tokens per second counts what `finetune` counts: each example's tokens but the last (the
inputs whose next token is predicted), over the seconds spent in steps.

Run by scripts/bench-finetune-speed.sh inside its torch venv:
    python scripts/finetune_peft.py --gguf FILE --data train.jsonl [--epochs 1 --threads 2]
"""

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import peft
import torch
import transformers


def conversations(path):
    """The Alpaca records (instruction, input, output) or chat records (messages) of a file."""
    out = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if "messages" in r:
            out.append(r["messages"])
        else:
            user = r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")
            out.append(
                [{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}]
            )
    return out


def tokenize(tok, conv, max_len):
    """Ids of the whole conversation and how many leading ids are prompt (not trained)."""
    prompt = tok.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(conv, tokenize=False)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = tok(full, add_special_tokens=False)["input_ids"]
    if ids[: len(p_ids)] != p_ids:
        sys.exit("the template renders the prompt differently with the answer: cannot mask it")
    return ids[:max_len], len(p_ids)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-len", type=int, default=512)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gguf = Path(args.gguf)
    start = time.perf_counter()
    tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = peft.LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM",
    )
    model = peft.get_peft_model(model, config)
    model.train()
    load_s = time.perf_counter() - start

    examples = [tokenize(tok, c, args.max_len) for c in conversations(args.data)]
    batches_per_epoch = math.ceil(len(examples) / args.batch_size)
    total = batches_per_epoch * args.epochs
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0
    )
    warmup = math.ceil(0.03 * total)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, warmup, total)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    steps = []
    rng = random.Random(args.seed)
    for epoch in range(args.epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        for b in range(batches_per_epoch):
            batch = [examples[i] for i in order[b * args.batch_size : (b + 1) * args.batch_size]]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (ids, prompt) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                labels[row, prompt : len(ids)] = torch.tensor(ids[prompt:])
                mask[row, : len(ids)] = 1
            t = time.perf_counter()
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            seconds = time.perf_counter() - t
            tokens = sum(len(ids) - 1 for ids, _ in batch)
            steps.append({"epoch": epoch + 1, "loss": loss.item(), "seconds": seconds,
                          "input_tokens": tokens})

    train_s = sum(s["seconds"] for s in steps)
    tokens = sum(s["input_tokens"] for s in steps)
    print(json.dumps({
        "engine": "peft + torch",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__},
        "threads": args.threads,
        "load_s": load_s,
        "train_seconds": train_s,
        "train_tokens": tokens,
        "train_tokens_per_s": tokens / train_s,
        "steps": steps,
    }))


if __name__ == "__main__":
    main()
