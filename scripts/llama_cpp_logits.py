#!/usr/bin/env python3
"""llama.cpp's logits for every position of a token sequence, for the tests that compare engines.

Writes the logits as little-endian f32, row after row (positions x vocabulary), to --out; with
--lora, llama.cpp applies that GGUF LoRA adapter (scale 1) to the model.
"""
import argparse

import llama_cpp
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--lora", help="a GGUF LoRA adapter file")
p.add_argument("--ids", required=True, help="comma-separated token ids")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--out", required=True)
a = p.parse_args()

ids = [int(t) for t in a.ids.split(",")]
llm = llama_cpp.Llama(
    model_path=a.model,
    lora_path=a.lora,
    logits_all=True,
    n_ctx=max(64, len(ids) + 8),
    n_threads=a.threads,
    n_threads_batch=a.threads,
    verbose=False,
)
llm.eval(ids)
np.asarray(llm.scores[: len(ids)], dtype="<f4").tofile(a.out)
