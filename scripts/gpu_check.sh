#!/usr/bin/env bash
# gpu_check.sh - the device checks, in one call (docs/gpu.md): run from the
# repository root on the device machine with .gpupack/ carried
# (scripts/gpu_pack.sh built it here). Writes to $OUT (at most 8 files):
# gpu_check.log (the GPU, every suite's output, compute-sanitizer on the
# training step) and the `dms bench train` records. Each part has its own
# time limit, so one that hangs cannot take the others with it. Exit 1 if
# a suite failed.
set -u
P=$(mktemp -d)
tar -C "$P" -xJf .gpupack/pack.tar.xz || { echo "gpu_check: no .gpupack/pack.tar.xz (carry .gpupack)"; exit 1; }
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
# CUDA's libraries: the toolkit's, else the Python wheels' (nvidia/*/lib)
LP=$P/lib
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d "$d" ] && LP=$LP:$d; done
W=$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]) + "/nvidia")' 2>/dev/null || true)
[ -n "$W" ] && for d in "$W"/*/lib "$W"/cu*/lib; do [ -d "$d" ] && LP=$LP:$d; done
export LD_LIBRARY_PATH=$LP${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fail=0
part() { # part NAME SECONDS command...
  local name=$1 secs=$2; shift 2
  echo "==== $name ($(date -u +%T))" >>"$LOG"
  local t0=$SECONDS
  timeout "$secs" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "==== $name: rc $rc in $((SECONDS - t0)) s" >>"$LOG"
  return $rc
}
{
  echo "commit packed: $(cat $P/commit 2>/dev/null), tree: $(git rev-parse --short HEAD 2>/dev/null)"
  nvidia-smi -L
  nvcc --version | tail -1
  ldd $P/bin/dms | grep -E 'not found|cublas' || true
} >>"$LOG" 2>&1
part "test_ops cuda" 240 $P/bin/test_ops cuda || fail=1
part "test_gpu_train cuda" 240 $P/bin/test_gpu_train cuda || fail=1
if command -v compute-sanitizer >/dev/null; then
  part "compute-sanitizer test_gpu_train step" 300 compute-sanitizer --error-exitcode 9 \
    $P/bin/test_gpu_train cuda step || fail=1
else
  echo "==== compute-sanitizer: not installed" >>"$LOG"
fi
for shape in "qwen3-0.6b --tokens 4096" "qwen3-1.7b --tokens 8192" "qwen3-8b --layers 4 --tokens 32768"; do
  # shellcheck disable=SC2086
  part "bench train $shape" 240 $P/bin/dms bench train --backend cuda --shape $shape --steps 3 --out "$OUT" ||
    echo "(bench $shape did not finish)" >>"$LOG"
done
tail -n 40 "$LOG"
exit $fail
