#!/usr/bin/env bash
# ablate.sh NAME STEPS 'JSON' - one recipe ablation (docs/quality.md, "What
# each change bought"): the KV CR 8 recipe (configs/smollm2_kvcr8.json) with
# the JSON keys overridden, trained for STEPS steps, exported in fp32, then
# KL on held-out text (GPL-3) for dms and for h2o and sinks matched to the
# KV budget DMS really held. Results in runs/ablate/NAME/ (result.txt, eval/).
# Collect them with bench/collect_ablation.py. About 12 minutes on 2 cores.
# A run that changes the base weights (lora_rank > 0: LoRA is merged at
# export) needs BASE=<an fp32 export of the base model>: the baselines run
# on it and DMS's KL is taken against it (--reference), not against the
# merged model. THREADS (default 0: all cores) goes to train and eval.
set -euo pipefail
cd "$(dirname "$0")/.."
N=$1 STEPS=$2 OV=${3:-'{}'}
THREADS=${THREADS:-0}
D=runs/ablate/$N
mkdir -p "$D"
python3 - "$D" "$STEPS" "$OV" "$THREADS" <<'PY'
import json, sys
d, steps, ov, threads = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
c = json.load(open("configs/smollm2_kvcr8.json"))
c.pop("_comment", None)
c.update(steps=steps, output=d + "/run", save_every=50, threads=threads)
c.update(ov)
json.dump(c, open(d + "/train.json", "w"), indent=1)
PY
start=$(date +%s)
./build/dms train --config "$D/train.json" > "$D/train.log" 2>&1
t1=$(date +%s)
./build/dms export --run "$D/run" --out "$D/export" --dtype fp32 --force > "$D/export.log" 2>&1
TEXT=/usr/share/common-licenses/GPL-3
BASE=${BASE:-$D/export}
common=(--out "$D/eval" --tag "$N" --threads "$THREADS" --quiet)
./build/dms eval --task kl --data $TEXT --windows 8 --policy dms --model "$D/export" --reference "$BASE" "${common[@]}" |
  grep '^kl' | tee "$D/result.txt"
for p in h2o sinks; do
  ./build/dms eval --task kl --data $TEXT --windows 8 --policy $p --model "$BASE" --match "$D/eval/kl-dms-$N.json" "${common[@]}" |
    grep '^kl' | tee -a "$D/result.txt"
done
echo "train $((t1 - start)) s, total $(($(date +%s) - start)) s" | tee -a "$D/result.txt"
