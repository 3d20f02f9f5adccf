#!/usr/bin/env bash
# build.sh - configure (Release) and build everything into build/, CUDA
# backend included when nvcc is found.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
