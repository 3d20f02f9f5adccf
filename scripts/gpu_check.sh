#!/usr/bin/env bash
# gpu_check.sh - the device checks, in one call (docs/gpu.md): run from the
# repository root on the device machine with .gpupack/ carried
# (scripts/gpu_pack.sh built it here; unpacked into a temporary folder) and
# .peer/ for NVIDIA's trainer (scripts/peer_pack.sh). Writes to $OUT (at
# most 8 files): gpu_check.log (the GPU, every suite's output,
# compute-sanitizer on the training step), the `dms bench train` records
# and the peer's. Each part has its own
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
# the peer's shape first (ours and NVIDIA's back to back), then ours alone at the real job's
part "bench train qwen3-1.7b 8K" 180 $P/bin/dms bench train --backend cuda --shape qwen3-1.7b --tokens 8192 \
  --steps 3 --out "$OUT" || echo "(bench qwen3-1.7b did not finish)" >>"$LOG"
if [ -f .peer/nvidia_dms/dms/training/engine.py ]; then
  part "peer: NVIDIA Model-Optimizer trainer, qwen3-1.7b 8K" 300 env PYTHONUNBUFFERED=1 python3 bench/nvidia_peer.py \
    --config bench/models/qwen3_1.7b/config.json --tokens 8192 --steps 3 --device cuda --out "$OUT" ||
    echo "(peer did not finish: rerun with --no-kernel-options, or --activation-checkpointing if out of memory)" >>"$LOG"
else
  echo "==== peer: no .peer/ carried (scripts/peer_pack.sh)" >>"$LOG"
fi
part "bench train qwen3-8b 4 layers 32K" 180 $P/bin/dms bench train --backend cuda --shape qwen3-8b --layers 4 \
  --tokens 32768 --steps 3 --out "$OUT" || echo "(bench qwen3-8b did not finish)" >>"$LOG"
if command -v compute-sanitizer >/dev/null; then
  part "compute-sanitizer test_gpu_train step" 240 compute-sanitizer --error-exitcode 9 \
    $P/bin/test_gpu_train cuda step || fail=1
else
  echo "==== compute-sanitizer: not installed" >>"$LOG"
fi
tail -n 40 "$LOG"
exit $fail
