#!/usr/bin/env bash
# Installs llama-cpp-python, the peer the tests and benchmarks compare with (llama.cpp on the same
# GGUF files), when it is missing. PyPI has only its source, a ~10-minute build on two cores, so
# the built wheel is kept in ~/.cache/billion-llm/wheels and a second install takes seconds. The
# wheel is built for this CPU (llama.cpp's native build): the cache is per machine.
#
# llama.cpp's AMX kernels are left out of the build: on the AMX-capable Xeon hosts this runs on,
# its AMX matmul crashes (SIGSEGV in ggml_backend_amx_mul_mat) on the first forward pass. Without
# them llama.cpp uses its AVX-512 VNNI / AVX2 kernels there, the paths our kernels are compared with.
set -euo pipefail
version="0.3.36"
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
python3 - "$version" <<'PY' 2>/dev/null && exit 0
import sys, llama_cpp
info = llama_cpp.llama_print_system_info().decode()
sys.exit(llama_cpp.__version__ != sys.argv[1] or "AMX_INT8 = 1" in info)
PY
wheels="$HOME/.cache/billion-llm/wheels/no-amx"
mkdir -p "$wheels"
wheel="$(ls "$wheels"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -1 || true)"
if [ -z "$wheel" ]; then
  echo "building llama-cpp-python $version (about 10 minutes on two cores)..."
  # From source, never pip's cache of an earlier build (which may have AMX in it).
  CMAKE_ARGS="-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF '-DCMAKE_C_FLAGS=$no_amx' '-DCMAKE_CXX_FLAGS=$no_amx'" \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" python3 -m pip wheel --quiet --no-deps \
    --no-binary llama-cpp-python --no-cache-dir "llama-cpp-python==$version" -w "$wheels"
  wheel="$(ls "$wheels"/llama_cpp_python-"$version"-*.whl | head -1)"
fi
python3 -m pip install --quiet --force-reinstall --no-deps "$wheel"
python3 -m pip install --quiet numpy diskcache jinja2 typing-extensions
