#!/usr/bin/env python3
"""Quantizes a GGUF file with llama.cpp's own quantizer (`llama_model_quantize`), the way a
model page's Q4_K_M, Q5_K_M or Q6_K file is made, so both engines can be measured on it.

The output is written beside --out and renamed only once complete. A source that is already
quantized is dequantized first (llama.cpp's `allow_requantize`), as for the shipped Q4_1 file.
"""
import argparse
import ctypes
import os

import llama_cpp

p = argparse.ArgumentParser()
p.add_argument("--model", required=True, help="the GGUF file to quantize")
p.add_argument("--type", required=True, help="a llama.cpp file type: Q4_K_M, Q5_K_M, Q6_K, Q8_0, ...")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--out", required=True)
a = p.parse_args()

name = "LLAMA_FTYPE_MOSTLY_" + a.type.upper()
if not hasattr(llama_cpp, name):
    known = sorted(n[len("LLAMA_FTYPE_MOSTLY_"):] for n in dir(llama_cpp) if n.startswith("LLAMA_FTYPE_MOSTLY_"))
    raise SystemExit(f"llama.cpp has no file type {a.type!r}; choose one of {', '.join(known)}")
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, name)
params.nthread = a.threads
params.allow_requantize = True
part = a.out + ".part"
if llama_cpp.llama_model_quantize(a.model.encode(), part.encode(), ctypes.byref(params)) != 0:
    if os.path.exists(part):
        os.remove(part)
    raise SystemExit(f"llama.cpp could not quantize {a.model} to {a.type}")
os.replace(part, a.out)
