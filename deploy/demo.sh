#!/usr/bin/env bash
# quire's main job on a fresh machine: fetch the models, build, serve, ingest the sample corpus
# and print a cited answer to a sample question.
#
#   deploy/demo.sh ["question"]
#
# QUIRE_LLM picks the LLM (default qwen2.5-1.5b; smollm2-135m is smaller and faster).
set -euo pipefail
cd "$(dirname "$0")/.."

question="${1:-Who was the first keeper of the Varrow Point Lighthouse, and for how long?}"
export QUIRE_MODEL_DIR="${QUIRE_MODEL_DIR:-$HOME/.cache/quire/models}"
export QUIRE_LLM="${QUIRE_LLM:-qwen2.5-1.5b}"
port="${QUIRE_DEMO_PORT:-50151}"
data_dir="$(mktemp -d "${TMPDIR:-/tmp}/quire-demo.XXXXXX")"
log="$data_dir/server.log"

# --all-targets: the demo and the tests then share one build (one feature set), so neither rebuilds.
cargo build --locked --workspace --all-targets
bin=target/debug/quire
"$bin" models fetch --llm "$QUIRE_LLM"

"$bin" serve --listen "127.0.0.1:$port" --data-dir "$data_dir/data" --preload-llm >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data_dir"' EXIT
for _ in $(seq 1 600); do
  grep -q "quire listening" "$log" && break
  kill -0 "$server" 2>/dev/null || { cat "$log"; echo "server exited" >&2; exit 1; }
  sleep 0.5
done
grep -q "quire listening" "$log" || { cat "$log"; echo "server did not start" >&2; exit 1; }

export QUIRE_ENDPOINT="http://127.0.0.1:$port"
"$bin" ingest deploy/samples
echo
echo "Q: $question"
"$bin" ask "$question"
