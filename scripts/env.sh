# Sourced by the scripts: where builds and assets are cached, outside the clone, so that a
# second run is quick and a fresh clone never commits them.
#
# One build folder per checkout: cargo's fingerprint of a path crate does not include where the
# checkout lives, so two clones sharing a target folder would run each other's test binaries
# (with the other clone's CARGO_MANIFEST_DIR compiled in).
checkout_key="$(pwd -P | sha256sum | cut -c1-12)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/billion-llm/target-$checkout_key}"
export BILLION_LLM_ASSETS="${BILLION_LLM_ASSETS:-$HOME/.cache/billion-llm/assets}"
