#!/usr/bin/env bash
# gpu_quality_unpack.sh FILES [PREFIX] - turns what scripts/gpu_quality.sh
# returned from the device (FILES: the folder the run tool's files are at)
# back into run folders here, one per run (PREFIX-NAME, default
# checkpoints/quality/kvcr8-gpu-NAME: config.json, metrics.jsonl, the
# checkpoint), plots them (dms inspect) and exports each in fp32 against the
# embedded model (runs/q/gpu-NAME), ready for bench/quality.sh
# (docs/quality.md, "On a GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
F=${1:?usage: scripts/gpu_quality_unpack.sh FILES [PREFIX]}
PREFIX=${2:-checkpoints/quality/kvcr8-gpu}
DMS=${DMS:-./build/dms}
mkdir -p runs/q
n=0
for c in "$F"/run-*-config.json; do
  [ -f "$c" ] || break
  s=${c##*/run-}
  s=${s%-config.json}
  R=$PREFIX-$s
  [ -e "$R" ] && { echo "gpu_quality_unpack: $R exists (move it away first)" >&2; exit 1; }
  mkdir -p "$R"
  cp "$c" "$R/config.json"
  [ -f "$F/run-$s-metrics.jsonl" ] && cp "$F/run-$s-metrics.jsonl" "$R/metrics.jsonl"
  for k in "$F"/run-"$s"-ckpt-*.h5; do
    [ -f "$k" ] || { echo "gpu_quality_unpack: run $s: no checkpoint in $F" >&2; exit 1; }
    cp "$k" "$R/${k##*/run-"$s"-}"
  done
  "$DMS" inspect "$R" | tail -n 3
  "$DMS" export --run "$R" --model models/default.gguf --out "runs/q/gpu-$s" --dtype fp32
  n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "gpu_quality_unpack: $F holds no run-*-config.json (gpu_quality.sh's files)" >&2; exit 1; }
echo "gpu_quality_unpack: $n run(s); next, for each: WINDOW=1024 BASE=runs/q/base bash bench/quality.sh runs/q/gpu-NAME gpu-NAME"
