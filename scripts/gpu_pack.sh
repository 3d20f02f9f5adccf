#!/usr/bin/env bash
# gpu_pack.sh - prepares .gpupack/ (ignored) for the device machine, the GPU
# a session is sometimes lent (docs/gpu.md): the CUDA build of dms and of
# its GPU suites, built here with nvcc for sm_90 (GPU_ARCH=NN for another), and the shared libraries
# of the stack that the device's image lacks (cJSON, PCRE2, utf8proc, HDF5,
# OpenBLAS, ...), so that the device installs nothing. CUDA's own libraries
# (cuBLAS) are the device image's. MPI is left out of this build: the
# device has one GPU, and the multi-rank suites run on the CPU here.
# Then, on the device: bash scripts/gpu_check.sh (carry: .gpupack).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${GPU_BUILD:-build-gpu}
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DDMS_CUDA=ON -DDMS_MPI=OFF -DCMAKE_CUDA_ARCHITECTURES="${GPU_ARCH:-90}" >/dev/null
grep -q '^CMAKE_CUDA_COMPILER:.*nvcc' "$B/CMakeCache.txt" || { echo "gpu_pack: nvcc not found: no CUDA build" >&2; exit 1; }
targets=(dms test_ops test_gpu_train)
# the NCCL communicator's suite, where NCCL was found (one rank on the device: the overlapped sum's ordering)
cmake --build "$B" --target help | grep -q ' test_gpu_nccl$' && targets+=(test_gpu_nccl)
cmake --build "$B" -j"$(nproc)" --target "${targets[@]}"
S=$B/pack # staged here, then one compressed file (the device's working tree is limited to 64 MiB)
rm -rf "$S" .gpupack
mkdir -p "$S/bin" "$S/lib" .gpupack
cp "$B/dms" "$B/tests/test_ops" "$B/tests/test_gpu_train" "$S/bin/"
[ -x "$B/tests/test_gpu_nccl" ] && cp "$B/tests/test_gpu_nccl" "$S/bin/"
# every library the binaries resolve here, except the C library's own and CUDA's
for b in "$S"/bin/*; do ldd "$b"; done | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u |
  grep -Ev '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libcuda|libcudart|libcublas|libcublasLt|libnccl|libcudnn[^/]*)\.so' |
  while read -r lib; do cp -L "$lib" "$S/lib/"; done
git describe --always --dirty >"$S/commit"
tar -C "$S" -cJf .gpupack/pack.tar.xz .
echo "gpu_pack: .gpupack/pack.tar.xz $(du -h .gpupack/pack.tar.xz | cut -f1) ($(ls "$S/lib" | wc -l) libraries, $(du -sh "$S" | cut -f1) unpacked) at $(cat "$S/commit")"
