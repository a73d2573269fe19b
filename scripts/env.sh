# Sourced by the scripts: where builds and assets are cached, outside the clone, so that a
# second run is quick and a fresh clone never commits them.
#
# One build folder per checkout: cargo's fingerprint of a path crate does not include where the
# checkout lives, so two clones sharing a target folder would run each other's test binaries
# (with the other clone's CARGO_MANIFEST_DIR compiled in).
#
# The checkout's `target/` is made a link to that folder (unless a target/ is already there), so a
# plain `cargo run` (the README's first command) and these scripts build in one place, found
# without any environment variable. (The notebook kernel builds in target-evcxr/: see
# notebooks/evcxr.toml for why it is neither here nor shared.)
checkout_key="$(pwd -P | sha256sum | cut -c1-12)"
if [ ! -e target ] && [ ! -L target ]; then
  mkdir -p "$HOME/.cache/billion-llm/target-$checkout_key"
  ln -s "$HOME/.cache/billion-llm/target-$checkout_key" target
fi
export BILLION_LLM_ASSETS="${BILLION_LLM_ASSETS:-$HOME/.cache/billion-llm/assets}"
