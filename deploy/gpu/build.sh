#!/usr/bin/env bash
# Builds the CUDA `quire` binary on a machine with no GPU and no system CUDA.
#
#   deploy/gpu/build.sh [OUT_DIR]     (default: target/cuda/dist)
#
# NVIDIA's toolchain comes from PyPI (nvcc, headers, and the libraries the binary links
# against), pinned to CUDA 13.0: the H200's driver (580) accepts PTX up to that version.
# The result is one stripped x86-64 binary whose kernels are embedded as PTX for sm_90.
# At run time it needs libcuda.so.1 from the driver and cuBLAS, cuRAND, NVRTC and the
# CUDA runtime (13.x); deploy/gpu/check.sh finds those in the Python environment's
# `nvidia` packages.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT_DIR=${1:-$ROOT/target/cuda/dist}
TOOLS=${QUIRE_CUDA_TOOLS:-$HOME/.cache/quire/cuda13}
CU=$TOOLS/nvidia/cu13

# --no-deps with every package pinned: nvidia-cuda-nvcc would otherwise pull the newest
# nvidia-nvvm, whose PTX (ISA 9.5) this nvcc's ptxas and the 580 driver both refuse.
PKGS=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-cccl==13.0.85
      nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35)
if [ ! -x "$CU/bin/nvcc" ] || [ "$(cat "$TOOLS/.pins" 2>/dev/null)" != "${PKGS[*]}" ]; then
    rm -rf "$TOOLS"
    python3 -m pip install --quiet --no-deps --target "$TOOLS" "${PKGS[@]}"
    echo "${PKGS[*]}" >"$TOOLS/.pins"
fi

# Link directory: unversioned names for the linker, and a stub libcuda.so.1. The driver
# library only exists where a GPU driver is installed; the stub exports every driver entry
# point cudarc declares, so the link records `libcuda.so.1` and the real one is used at
# run time.
cargo fetch --locked >/dev/null
CUDARC=$(cargo metadata --locked --format-version 1 --features quire/cuda |
    python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc"))')
LINK=$TOOLS/link
mkdir -p "$LINK"
grep -o 'pub unsafe fn cu[A-Za-z0-9_]*' "$(dirname "$CUDARC")/src/driver/sys/mod.rs" |
    awk '{print "void " $4 "(void) {}"}' | sort -u >"$LINK/cuda_stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$LINK/libcuda.so" "$LINK/cuda_stub.c"
for lib in cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13 cudart.so.13; do
    ln -sf "$CU/lib/lib$lib" "$LINK/lib${lib%.so.*}.so"
done

export CUDA_ROOT=$CU CUDA_HOME=$CU CUDA_PATH=$CU PATH=$CU/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH=$LINK${LIBRARY_PATH:+:$LIBRARY_PATH}
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$LINK"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/cuda}
cargo build --locked --release --bin quire --features quire/cuda

mkdir -p "$OUT_DIR"
strip -o "$OUT_DIR/quire" "$CARGO_TARGET_DIR/release/quire"
xz -T0 -6 -k -f "$OUT_DIR/quire"
ls -l "$OUT_DIR/quire" "$OUT_DIR/quire.xz"
echo "needed libraries:"; readelf -d "$OUT_DIR/quire" | grep NEEDED
