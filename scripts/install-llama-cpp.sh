#!/usr/bin/env bash
# Installs llama-cpp-python, the peer the tests and benchmarks compare with (llama.cpp on the same
# GGUF files), when it is missing. PyPI has only its source, a ~10-minute build on two cores, so
# the built wheel is kept in ~/.cache/billion-llm/wheels and a second install takes seconds. The
# wheel is built for this CPU (llama.cpp's native build): the cache is per machine.
set -euo pipefail
version="0.3.36"
python3 -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$version')" 2>/dev/null && exit 0
wheels="$HOME/.cache/billion-llm/wheels"
mkdir -p "$wheels"
wheel="$(ls "$wheels"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -1 || true)"
if [ -z "$wheel" ]; then
  echo "building llama-cpp-python $version (about 10 minutes on two cores)..."
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" python3 -m pip wheel --quiet --no-deps \
    "llama-cpp-python==$version" -w "$wheels"
  wheel="$(ls "$wheels"/llama_cpp_python-"$version"-*.whl | head -1)"
fi
python3 -m pip install --quiet "$wheel" numpy diskcache jinja2 typing-extensions
