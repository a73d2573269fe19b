#!/usr/bin/env python3
"""llama.cpp's logits for the positions of a token sequence, or its token ids for texts, for the
tests that compare engines.

Logits: written as little-endian f32, row after row (positions x vocabulary), to --out; --last N
keeps only the last N positions (a long prompt's rows over a 262k vocabulary would be hundreds
of MB); with --lora, llama.cpp applies that GGUF LoRA adapter (scale 1) to the model.
Token ids: with --tokenize FILE (a JSON list of texts), --out gets a JSON list of id lists, as
llama.cpp tokenizes each text with BOS and special tokens.
"""
import argparse
import json

import llama_cpp
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--lora", help="a GGUF LoRA adapter file")
p.add_argument("--ids", help="comma-separated token ids")
p.add_argument("--last", type=int, help="only the last N positions' logits")
p.add_argument("--tokenize", help="a JSON file with a list of texts to tokenize")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--out", required=True)
a = p.parse_args()

if a.tokenize:
    llm = llama_cpp.Llama(model_path=a.model, vocab_only=True, verbose=False)
    with open(a.tokenize, encoding="utf-8") as f:
        texts = json.load(f)
    ids = [llm.tokenize(t.encode("utf-8"), add_bos=True, special=True) for t in texts]
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(ids, f)
    raise SystemExit(0)

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
first = len(ids) - (a.last or len(ids))
np.asarray(llm.scores[first : len(ids)], dtype="<f4").tofile(a.out)
