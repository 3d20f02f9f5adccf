#!/usr/bin/env bash
# gpu_check.sh - the device checks, in one call (docs/gpu.md): run from the
# repository root on the device machine with .gpupack/ carried
# (scripts/gpu_pack.sh built it here; unpacked into a temporary folder) and
# .peer/ for NVIDIA's trainer (scripts/peer_pack.sh). Writes to $OUT (at
# most 8 files): gpu_check.log (the GPU, every suite's output,
# compute-sanitizer on the training step), the `dms bench train` and
# `dms bench attention` records, PyTorch SDPA's (bench/sdpa_peer.py), the
# NVIDIA trainer's and Nsight Compute's report on the attention kernels
# (ncu_attention.txt). The correctness suites run side by side
# first; then the benchmarks one at a time (they time the GPU). Each part
# has its own time limit, cut to what is left of GPU_CHECK_SECONDS (default
# 540) for the whole script, so one that hangs cannot take the others with
# it, and a part with under 15 s left is not started (logged as such).
# GPU_CHECK_PARTS (comma-separated; default all) picks the parts: tests,
# nccl, attention, ncu, sdpa, train, profile, peer, whole - so that a lease too
# short for everything can be split into two calls. Exit 1 if a suite failed.
set -u
P=$(mktemp -d)
. "$(dirname "$0")/gpu_unpack.sh"
gpu_unpack "$P" || { echo "gpu_check: no .gpupack/pack.tar.xz (carry .gpupack)"; exit 1; }
OUT=${OUT:-runs/gpu_check}
BUDGET=${GPU_CHECK_SECONDS:-540}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
fail=0
left() { echo $((BUDGET - SECONDS)); }
want() { case ",${GPU_CHECK_PARTS:-tests,nccl,attention,ncu,sdpa,train,profile,peer,whole}," in *",$1,"*) return 0 ;; esac; return 1; }
part() { # part NAME SECONDS command...: runs it under min(SECONDS, what is left), output to the log
  local name=$1 secs=$2; shift 2
  [ "$secs" -gt "$(left)" ] && secs=$(left)
  if [ "$secs" -lt 15 ]; then echo "==== $name: not started ($(left) s of the budget left)" >>"$LOG"; return 124; fi
  echo "==== $name ($(date -u +%T), limit $secs s)" >>"$LOG"
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
# correctness, side by side, each into its own log, appended in order afterwards; the training
# suite also with the fp32 attention kernels (DMS_CUDA_ATTENTION=fp32) beside the default tensor-core ones
if want tests; then
  SAN=(echo "compute-sanitizer: not installed")
  command -v compute-sanitizer >/dev/null && SAN=(compute-sanitizer --error-exitcode 9 $P/bin/test_gpu_train cuda step)
  : >"$LOG.a"; : >"$LOG.b"; : >"$LOG.c"; : >"$LOG.d"
  (LOG=$LOG.a part "test_ops cuda" 120 $P/bin/test_ops cuda) & pa=$!
  (LOG=$LOG.b part "test_gpu_train cuda" 200 $P/bin/test_gpu_train cuda) & pb=$!
  (LOG=$LOG.c part "compute-sanitizer test_gpu_train step" 180 "${SAN[@]}") & pc=$!
  (LOG=$LOG.d part "test_gpu_train cuda, fp32 attention" 200 env DMS_CUDA_ATTENTION=fp32 $P/bin/test_gpu_train cuda) &
  pd=$!
  wait $pa || fail=1
  wait $pb || fail=1
  wait $pc || fail=1
  wait $pd || fail=1
  cat "$LOG.a" "$LOG.b" "$LOG.c" "$LOG.d" >>"$LOG"; rm -f "$LOG.a" "$LOG.b" "$LOG.c" "$LOG.d"
fi
# NCCL on one rank: the sum, and the overlapped sum queued behind another stream's work
if want nccl; then
  if [ -x $P/bin/test_gpu_nccl ] && ldd $P/bin/test_gpu_nccl | grep -q 'libnccl.*not found'; then
    echo "==== test_gpu_nccl: libnccl not found on the device (not packed: the toolkit's or a wheel's)" >>"$LOG"
  elif [ -x $P/bin/test_gpu_nccl ]; then
    part "test_gpu_nccl (1 rank)" 60 $P/bin/test_gpu_nccl || fail=1
  else
    echo "==== test_gpu_nccl: not packed (NCCL not found at gpu_pack time)" >>"$LOG"
  fi
fi
# the attention alone, ours and PyTorch's SDPA (cuDNN, flash), at Qwen3-8B's attention shape, 32K tokens
if want attention; then
  part "bench attention 32K" 90 $P/bin/dms bench attention --backend cuda --tokens 32768 --steps 3 --out "$OUT" ||
    echo "(bench attention did not finish)" >>"$LOG"
fi
# where the attention kernels' time goes: Nsight Compute on one launch of each, 16K tokens
if want ncu; then
  if command -v ncu >/dev/null; then
    part "ncu: attention kernels, 16K" 90 ncu --clock-control none --kernel-name regex:'k_mma_(fwd|dq|dkv|prep)' --launch-count 9 \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
      --section WarpStateStats --section ComputeWorkloadAnalysis --section InstructionStats --log-file "$OUT/ncu_attention.txt" \
      $P/bin/dms bench attention --backend cuda --tokens 16384 --steps 1 --out "$P" ||
      echo "(ncu did not finish)" >>"$LOG"
  else
    echo "==== ncu: not installed" >>"$LOG"
  fi
fi
if want sdpa; then
  part "peer: PyTorch SDPA 32K" 60 env PYTHONUNBUFFERED=1 python3 bench/sdpa_peer.py --tokens 32768 --steps 5 \
    --out "$OUT" || echo "(sdpa peer did not finish)" >>"$LOG"
fi
# the peer's shape (ours, then NVIDIA's after ours alone at the real job's)
if want train; then
  part "bench train qwen3-1.7b 8K" 120 $P/bin/dms bench train --backend cuda --shape qwen3-1.7b --tokens 8192 \
    --steps 3 --out "$OUT" || echo "(bench qwen3-1.7b did not finish)" >>"$LOG"
  # the same step with the attention recomputed in the backward (backward_attention recompute), for the ratio
  # (its record stays behind: the log has its lines, and $OUT keeps within the 8 files a device call returns)
  part "bench train qwen3-1.7b 8K, attention recomputed" 120 $P/bin/dms bench train --backend cuda --shape qwen3-1.7b \
    --tokens 8192 --steps 3 --recompute-attention --out "$P" || echo "(bench qwen3-1.7b recompute did not finish)" >>"$LOG"
  part "bench train qwen3-8b 4 layers 32K" 120 $P/bin/dms bench train --backend cuda --shape qwen3-8b --layers 4 \
    --tokens 32768 --steps 3 --out "$OUT" || echo "(bench qwen3-8b did not finish)" >>"$LOG"
fi
# where a step's time goes, kernel by kernel (cuBLASLt's GEMMs, ours): Nsight Compute's duration of every
# launch of one step of two Qwen3-1.7B layers at 8K tokens, summed per kernel name, into the log
if want profile; then
  if command -v ncu >/dev/null; then
    part "ncu: one training step, per kernel" 120 ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
      $P/bin/dms bench train --backend cuda --shape qwen3-1.7b --layers 2 --tokens 8192 --steps 1 --out "$P" ||
      echo "(ncu step profile did not finish)" >>"$LOG"
  else
    echo "==== ncu: not installed" >>"$LOG"
  fi
fi
if want peer; then
  if [ -f .peer/nvidia_dms/dms/training/engine.py ]; then
    part "peer: NVIDIA Model-Optimizer trainer, qwen3-1.7b 8K" 300 env PYTHONUNBUFFERED=1 python3 bench/nvidia_peer.py \
      --config bench/models/qwen3_1.7b/config.json --tokens 8192 --steps 3 --device cuda --out "$OUT" ||
      echo "(peer did not finish: rerun with --no-kernel-options, or --activation-checkpointing if out of memory)" >>"$LOG"
  else
    echo "==== peer: no .peer/ carried (scripts/peer_pack.sh)" >>"$LOG"
  fi
fi
# then, with what is left: the real job's shape whole (Qwen3-8B, 36 layers, 32K tokens), one timed step
if want whole; then
  part "bench train qwen3-8b 32K" 200 $P/bin/dms bench train --backend cuda --shape qwen3-8b --tokens 32768 \
    --steps 1 --out "$OUT/whole" || echo "(bench qwen3-8b whole did not finish)" >>"$LOG"
fi
grep -E '^====|^commit|^GPU |^dms |did not finish|^step |^run |^forward |^sdpa |^bf16 |^peak memory|^phases|CHECK failed|passed|FAIL|ERROR|rror:' "$LOG" | tail -n 60
exit $fail
