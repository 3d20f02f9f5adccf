#!/usr/bin/env bash
# quality.sh EXPORT TAG [THREADS] - the retrofit against training-free
# eviction at the KV budget DMS really held (docs/quality.md): KL on held-out
# text (GPL-3, not in the training corpus) for dms, then window, sinks, tova
# and h2o matched to DMS's time-averaged live tokens, and full; then needle
# in a haystack for dms, full and every baseline at DMS's measured KV CR.
# Results land in runs/quality/TAG/ (summarised into bench/results/ by hand).
# WINDOW: tokens per KL window (default 512; 1024 for the KV CR 8 point: a
# 32-token eviction window caps the time-averaged KV CR at 7.2 on 512 tokens).
# BASE: an export whose weights are the base model's, for a retrofit that
# changed them (LoRA, merged at export): the baselines and vanilla run on
# BASE and DMS's KL is taken against it (--reference). Default: EXPORT.
# TEXT: the held-out text for KL (default GPL-3; the training domain's:
# scripts/make_heldout_text.py).
set -euo pipefail
cd "$(dirname "$0")/.."
EXP=$1 TAG=$2 THREADS=${3:-0}
BASE=${BASE:-$EXP}
WINDOW=${WINDOW:-512}
OUT=runs/quality/$TAG
TEXT=${TEXT:-/usr/share/common-licenses/GPL-3}
DMS=${DMS:-./build/dms}  # another build: DMS=build-final/dms
# --batch 8: the scored baselines (tova, h2o) evict after every query, so
# they go token by token through batched decode; 8 windows (or prompts) at
# once read the weights once per 8 tokens (DMS and the rest prefill in chunks)
common=(--out "$OUT" --tag "$TAG" --threads "$THREADS" --batch 8 --quiet)
kl=(--task kl --data "$TEXT" --windows 8 --window-tokens "$WINDOW")
$DMS eval "${kl[@]}" --policy dms --model "$EXP" --reference "$BASE" "${common[@]}" | grep '^kl'
for p in window sinks tova h2o; do
  $DMS eval "${kl[@]}" --policy $p --model "$BASE" --match "$OUT/kl-dms-$TAG.json" \
    "${common[@]}" | grep '^kl'
done
if [ "$BASE" != "$EXP" ]; then  # what the changed weights cost by themselves, with the plain cache
  $DMS eval "${kl[@]}" --policy full --model "$EXP" --reference "$BASE" "${common[@]}" | grep '^kl'
fi
niah=(--lengths 512,1024,2048 --depths 0,50,100 --samples 1)
$DMS eval --task niah "${niah[@]}" --policy dms --model "$EXP" "${common[@]}" | grep '^niah'
cr=$(python3 -c "import json;print(round(json.load(open('$OUT/niah-dms-$TAG.json'))['kv']['kv_cr'],3))" 2>/dev/null || echo 4)
$DMS eval --task niah "${niah[@]}" --policy full --model "$BASE" "${common[@]}" | grep '^niah'
for p in window sinks tova h2o; do
  $DMS eval --task niah "${niah[@]}" --policy $p --model "$BASE" --cr "$cr" "${common[@]}" | grep '^niah'
done
$DMS eval --summary "$OUT"
