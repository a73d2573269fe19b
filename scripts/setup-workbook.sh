#!/usr/bin/env bash
# Installs what the notebooks and the book need, skipping whatever is already there, so that a
# second run takes seconds:
#   - JupyterLab and nbconvert (PyPI)
#   - the evcxr Rust kernel (crates.io; its first build takes ~20 minutes on 2 cores)
#   - mdBook 0.5 (crates.io; ~4 minutes the first time)
#   - KaTeX (npm), copied into mdbook/src/katex so the book renders formulas without a network
# With --test it also installs what the book's screenshot check uses: Debian's chromium and
# Pillow.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

say() { echo "-- $*"; }

if ! python3 -c "import jupyterlab, nbconvert" 2>/dev/null; then
  say "installing JupyterLab and nbconvert (pip)"
  python3 -m pip install --quiet --disable-pip-version-check jupyterlab nbconvert
fi

if ! command -v evcxr_jupyter >/dev/null; then
  say "installing the evcxr Rust kernel (cargo install; ~20 minutes on 2 cores, once)"
  # Its own throwaway build folder: sharing the crate's would wait on (and clutter) that lock.
  env -u CARGO_TARGET_DIR cargo install --locked evcxr_jupyter
fi
if ! jupyter kernelspec list 2>/dev/null | grep -qw rust; then
  say "registering the Rust kernel with Jupyter"
  evcxr_jupyter --install
fi

if ! mdbook --version 2>/dev/null | grep -q "v0\.5\."; then
  say "installing mdBook 0.5 (cargo install; ~4 minutes, once)"
  env -u CARGO_TARGET_DIR cargo install --locked mdbook --version "^0.5"
fi

KATEX_VERSION=0.16.22
katex_dir=mdbook/src/katex
if [ ! -f "$katex_dir/.version-$KATEX_VERSION" ]; then
  say "copying KaTeX $KATEX_VERSION from npm into $katex_dir"
  cache="$HOME/.cache/billion-llm/npm"
  mkdir -p "$cache"
  tarball="$cache/katex-$KATEX_VERSION.tgz"
  if [ ! -f "$tarball" ]; then
    (cd "$cache" && npm pack --silent "katex@$KATEX_VERSION" >/dev/null)
  fi
  tmp="$(mktemp -d)"
  tar -xzf "$tarball" -C "$tmp"
  rm -rf "$katex_dir"
  mkdir -p "$katex_dir/contrib"
  cp "$tmp/package/dist/katex.min.css" "$tmp/package/dist/katex.min.js" "$katex_dir/"
  cp "$tmp/package/dist/contrib/auto-render.min.js" "$katex_dir/contrib/"
  cp -r "$tmp/package/dist/fonts" "$katex_dir/"
  cp "$tmp/package/LICENSE" "$katex_dir/"
  rm -rf "$tmp"
  touch "$katex_dir/.version-$KATEX_VERSION"
fi

if [ "${1:-}" = "--test" ]; then
  if ! command -v chromium >/dev/null; then
    say "installing chromium (apt-get) for the book's screenshot check"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && apt-get install -y -qq chromium chromium-driver >/dev/null; }
  fi
  if ! python3 -c "import PIL" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check pillow
  fi
fi
