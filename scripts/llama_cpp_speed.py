#!/usr/bin/env python3
"""llama.cpp's side of `billion-llm bench-speed`: the same GGUF, prompt, lengths and threads.

Loads the model once, prints {"version": "..."} and then times one generation (a fresh cache,
the prompt in one pass, greedy new tokens one at a time) per line "run" read from stdin,
printing {"prefill_tokens_per_s": x, "decode_tokens_per_s": y} for each. `bench-speed` asks for
a run after each of its own, so both engines meet the machine's slow spells alike.
"""
import argparse, json, sys, time

import llama_cpp
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--prompt-ids", required=True, help="comma-separated token ids")
p.add_argument("--new-tokens", type=int, default=128)
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


print(json.dumps({"version": llama_cpp.__version__}), flush=True)
for line in sys.stdin:
    if line.strip() != "run":
        break
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    t1 = time.perf_counter()
    # The first new token comes from the prefill's logits; N new tokens cost N - 1 decode steps.
    for _ in range(a.new_tokens - 1):
        token = int(np.argmax(last_logits()))
        llm.eval([token])
    t2 = time.perf_counter()
    print(json.dumps({"prefill_tokens_per_s": len(prompt) / (t1 - t0),
                      "decode_tokens_per_s": (a.new_tokens - 1) / (t2 - t1)}), flush=True)
