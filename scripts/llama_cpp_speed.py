#!/usr/bin/env python3
"""llama.cpp's side of `billion-llm bench-speed`: the same GGUF, prompt, lengths and threads.

Prints JSON: {"prefill_tokens_per_s": [...], "decode_tokens_per_s": [...], "version": "..."}
with one entry per timed run (the warm-up runs are not reported).
"""
import argparse, json, time

import llama_cpp
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--prompt-ids", required=True, help="comma-separated token ids")
p.add_argument("--new-tokens", type=int, default=128)
p.add_argument("--warmup", type=int, default=1)
p.add_argument("--runs", type=int, default=5)
a = p.parse_args()

prompt = [int(t) for t in a.prompt_ids.split(",")]
llm = llama_cpp.Llama(
    model_path=a.model,
    n_threads=a.threads,
    n_threads_batch=a.threads,
    n_ctx=len(prompt) + a.new_tokens + 8,
    n_batch=512,
    verbose=False,
)
n_vocab = llm.n_vocab()


def last_logits():
    # Without logits_all, llama-cpp-python no longer copies logits into `scores`: read the
    # context's output row (only the last position of a batch has one).
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))


prefill, decode = [], []
for run in range(a.warmup + a.runs):
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    t1 = time.perf_counter()
    # The first new token comes from the prefill's logits; N new tokens cost N - 1 decode steps.
    for _ in range(a.new_tokens - 1):
        token = int(np.argmax(last_logits()))
        llm.eval([token])
    t2 = time.perf_counter()
    if run >= a.warmup:
        prefill.append(len(prompt) / (t1 - t0))
        decode.append((a.new_tokens - 1) / (t2 - t1))
print(json.dumps({"prefill_tokens_per_s": prefill, "decode_tokens_per_s": decode,
                  "version": llama_cpp.__version__}))
