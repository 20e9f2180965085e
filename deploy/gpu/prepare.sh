#!/usr/bin/env bash
# Prepares what deploy/gpu/check.sh carries to the GPU machine, in .gpu/ (git-ignored):
# the CUDA quire binary, stripped and xz-compressed, and Qwen's tokenizer files exported
# from the GGUF in the model directory (xz-compressed). Together well under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/gpu/build.sh target/cuda/dist
mkdir -p .gpu/qwen-tokenizer
cp target/cuda/dist/quire.xz .gpu/quire.xz
rm -f .gpu/quire
# The CUDA binary needs a driver to start, so the tokenizer is exported by the CPU build.
cargo build --locked --workspace --all-targets
target/debug/quire models export-tokenizer --llm qwen2.5-1.5b --out .gpu/qwen-tokenizer
xz -f -6 .gpu/qwen-tokenizer/tokenizer.json .gpu/qwen-tokenizer/tokenizer_config.json
du -sh .gpu .gpu/*
