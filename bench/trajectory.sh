#!/usr/bin/env bash
# trajectory.sh RUN TAG STEP[,STEP...] - how a retrofit's quality moves along
# its training run (docs/quality.md): each listed checkpoint of RUN is
# exported (fp32, into a scratch folder removed afterwards), then KL on
# held-out text (GPL-3) for dms and for each baseline in POLICIES matched to
# the KV budget that checkpoint really held. Results land in
# runs/quality/TAG/ as kl-<policy>-sSTEP.json; collect them with
#   python3 bench/collect_trajectory.py runs/quality/TAG RUN/config.json OUT.json
# BASE: an fp32 export of the base model, for runs that change the weights
# (LoRA): baselines run on it and DMS's KL is taken against it.
# WINDOW (default 1024), WINDOWS (default 8), POLICIES (default "h2o"),
# THREADS (default 0: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$1 TAG=$2 STEPS=$3
WINDOW=${WINDOW:-1024} WINDOWS=${WINDOWS:-8} POLICIES=${POLICIES:-h2o} THREADS=${THREADS:-0}
OUT=runs/quality/$TAG
TEXT=/usr/share/common-licenses/GPL-3
mkdir -p "$OUT"
for s in ${STEPS//,/ }; do
  exp=$OUT/export-s$s
  ./build/dms export --run "$RUN" --step "$s" --out "$exp" --dtype fp32 --force --threads "$THREADS" > "$OUT/export-s$s.log" 2>&1
  base=${BASE:-$exp}
  common=(--task kl --data "$TEXT" --windows "$WINDOWS" --window-tokens "$WINDOW" --out "$OUT" --tag "s$s"
          --threads "$THREADS" --quiet)
  ./build/dms eval "${common[@]}" --policy dms --model "$exp" --reference "$base" | grep '^kl'
  for p in $POLICIES; do
    ./build/dms eval "${common[@]}" --policy "$p" --model "$base" --match "$OUT/kl-dms-s$s.json" | grep '^kl'
  done
  rm -rf "$exp"
done
