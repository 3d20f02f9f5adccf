#!/usr/bin/env bash
# test.sh - build, then run every CPU test suite with ctest. Suites labelled
# `gpu` need the device machine: scripts/gpu_pack.sh here, then
# scripts/gpu_check.sh there (docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
ctest --test-dir build -LE gpu --output-on-failure -j2
