#!/usr/bin/env bash
# quire against PyTorch on one GPU, side by side, in one run:
#
#   deploy/gpu/check.sh OUT_DIR          on the GPU machine (an H200 with PyTorch and
#                                        transformers, no network, no model files)
#   deploy/gpu/check.sh OUT_DIR --cpu    rehearsal on a CPU, tiny shapes
#
# QUIRE_CHECK_PARTS=encoder runs only the embedding half (default: encoder,decode).
#
# Needs the quire binary: $QUIRE_BIN, or .gpu/quire(.xz) as deploy/gpu/prepare.sh leaves it
# (with --cpu: target/debug/quire), and Qwen's tokenizer files in .gpu/qwen-tokenizer, which
# prepare.sh exports from the GGUF (with --cpu and no such folder, they are exported here).
#
# Steps: random-weight models of the real shapes (all-MiniLM-L6-v2's BERT, Qwen2.5-1.5B),
# saved as safetensors and shared by both sides; quire's encoder and decode benchmarks; the
# same workloads through transformers (eager, then torch.compile if time allows); a table of
# the ratios, printed and written to OUT_DIR/table.md with the raw JSON beside it.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: deploy/gpu/check.sh OUT_DIR [--cpu]}
CPU=${2:-}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
started=$SECONDS

if [ "$CPU" = --cpu ]; then
    BIN=${QUIRE_BIN:-target/debug/quire}
    SIDE=(--cpu)
    SHAPES=(--batch 8 --seq 64)
    DECODE=(--prompt-tokens 64 --new-tokens 16)
else
    SIDE=()
    SHAPES=(--batch 256 --seq 256)
    DECODE=(--prompt-tokens 2000 --new-tokens 256)
    if [ -z "${QUIRE_BIN:-}" ] && [ ! -x .gpu/quire ]; then
        xz -dkf .gpu/quire.xz
        chmod +x .gpu/quire
    fi
    BIN=${QUIRE_BIN:-.gpu/quire}
    # The CUDA libraries quire links against (cuBLAS, cuRAND, NVRTC, the runtime) come from
    # the Python environment's NVIDIA packages; libcuda.so.1 from the driver.
    LIBS=$("$PY" - <<'EOF'
import glob, os
import nvidia
dirs = []
for root in nvidia.__path__:
    dirs += sorted(glob.glob(os.path.join(root, "cu1*", "lib")))
    dirs += sorted(glob.glob(os.path.join(root, "*", "lib")))
print(":".join(d for d in dict.fromkeys(dirs) if os.path.isdir(d)))
EOF
)
    for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
        [ -d "$d" ] && LIBS=$LIBS:$d
    done
    export LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
fi

PARTS=${QUIRE_CHECK_PARTS:-encoder,decode}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/quire-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
"$PY" deploy/gpu/torch_side.py models --work "$WORK" --parts "$PARTS" "${SIDE[@]}"
if [[ $PARTS != *decode* ]]; then
    :
elif [ -d .gpu/qwen-tokenizer ]; then
    for f in tokenizer.json tokenizer_config.json; do
        if [ -f ".gpu/qwen-tokenizer/$f.xz" ]; then
            xz -dc ".gpu/qwen-tokenizer/$f.xz" >"$WORK/qwen/$f"
        else
            cp ".gpu/qwen-tokenizer/$f" "$WORK/qwen/$f"
        fi
    done
else
    "$BIN" models export-tokenizer --llm qwen2.5-1.5b --out "$WORK/qwen"
fi
echo "models ready after $((SECONDS - started)) s"

: >"$OUT/quire.jsonl"
# A failure on quire's side is reported and the PyTorch side still runs.
"$BIN" bench encoder --model-config "$WORK/bert/config.json" --weights "$WORK/bert/model.safetensors" \
    "${SHAPES[@]}" --profile 2>"$OUT/quire-encoder.log" | tee -a "$OUT/quire.jsonl" ||
    { echo "quire bench encoder FAILED:"; tail -5 "$OUT/quire-encoder.log"; }
"$BIN" bench encoder --model-config "$WORK/bert/config.json" --weights "$WORK/bert/model.safetensors" \
    "${SHAPES[@]}" --padding --profile 2>>"$OUT/quire-encoder.log" | tee -a "$OUT/quire.jsonl" ||
    { echo "quire bench encoder --padding FAILED:"; tail -5 "$OUT/quire-encoder.log"; }
# QUIRE_BERT_BIAS_COMPARE="broadcast outer" times the encoder's other bias strategies too
# (services/models/src/bert.rs, BiasMode), into bias-modes.jsonl.
for mode in ${QUIRE_BERT_BIAS_COMPARE:-}; do
    echo "{\"bias_mode\":\"$mode\",\"result\":$(QUIRE_BERT_BIAS=$mode "$BIN" bench encoder \
        --model-config "$WORK/bert/config.json" --weights "$WORK/bert/model.safetensors" \
        "${SHAPES[@]}" --profile 2>>"$OUT/quire-encoder.log")}" | tee -a "$OUT/bias-modes.jsonl"
done
if [[ $PARTS == *decode* ]]; then
    "$BIN" bench decode --model "$WORK/qwen" "${DECODE[@]}" 2>"$OUT/quire-decode.log" |
        tee -a "$OUT/quire.jsonl" ||
        { echo "quire bench decode FAILED:"; tail -5 "$OUT/quire-decode.log"; }
fi
echo "quire done after $((SECONDS - started)) s"

# PyTorch gets what is left of an 8-minute run, less a margin for the report.
budget=$((420 - (SECONDS - started)))
[ "$budget" -lt 60 ] && budget=60
"$PY" deploy/gpu/torch_side.py bench --work "$WORK" --out "$OUT" --budget-s "$budget" \
    --parts "$PARTS" "${SIDE[@]}"
"$PY" deploy/gpu/torch_side.py report --out "$OUT"
echo "check finished in $((SECONDS - started)) s"
