#!/usr/bin/env bash
# train_faults.sh - dms train under bad input and faults (run with the
# dms_faults binary: the CLI plus the test seam of tests/seams): a non-finite step
# is skipped and logged; K in a row stop the run with the last good
# checkpoint named and intact; a failed checkpoint write (file-size limit,
# as on a full disk) keeps the previous checkpoint, which a resume then
# uses; shards from another tokenizer and unknown config keys are refused
# with one-line errors. Uses the embedded model ($1 is the dms binary).
set -u
DMS=$1
. "$(dirname "$0")/lib/harness.sh"
M=${DMS_DEFAULT_GGUF:-models/default.gguf}
[ -f "$M" ] || { echo "FAIL: $M missing; run scripts/install_deps.sh"; echo "0 passed, 1 failed"; exit 1; }

for i in $(seq 1 12); do
  echo "{\"text\": \"Sample $i. Long reasoning fills the KV cache; evicting tokens with a delay keeps accuracy at $((i + 3))x compression.\"}"
done >"$T/c.jsonl"
"$DMS" prep --model "$M" --input "$T/c.jsonl" --output "$T/data" --max-len 32 --quiet || bad "prep"

config() { # config NAME OUTPUT STEPS [EXTRA_JSON]
  cat >"$T/$1.json" <<JSON
{"model": "$M", "data": "$T/data", "output": "$2", "steps": $3, "max_len": 32, "window": 4,
 "lr": 0.001, "cr_final": 2, "steps_per_cr": 2, "save_every": 2, "keep_last": 5, "max_bad_steps": 3${4:-}}
JSON
}

# 1. one non-finite step: skipped, logged, the run goes on
config skip "$T/skip" 5
if DMS_FAULT_NAN_STEPS=3 "$DMS" train --config "$T/skip.json" 2>"$T/err"; then ok; else bad "skip: rc $?: $(tail -1 "$T/err")"; fi
grep -q '"step":3,.*"skipped":true' "$T/skip/metrics.jsonl" && ok || bad "skip: step 3 not marked skipped"
grep -q "skipped: non-finite" "$T/err" && ok || bad "skip: not reported on stderr"
[ -f "$T/skip/ckpt-00000005.h5" ] && ok || bad "skip: no final checkpoint"

# 2. three in a row: stop, naming the last good checkpoint, which stays intact
config stop "$T/stop" 8
DMS_FAULT_NAN_STEPS=2,3,4 "$DMS" train --config "$T/stop.json" 2>"$T/err"
rc=$?
[ $rc -eq 1 ] && ok || bad "stop: rc $rc"
grep -q "3 non-finite steps in a row.*last good checkpoint: $T/stop/ckpt-00000002.h5" "$T/err" && ok || bad "stop: $(tail -1 "$T/err")"
[ -f "$T/stop/ckpt-00000002.h5" ] && [ ! -f "$T/stop/ckpt-00000004.h5" ] && ok || bad "stop: checkpoints $(ls "$T/stop")"
if "$DMS" train --config "$T/stop.json" --resume 2>"$T/err"; then ok; else bad "stop: resume after the stop failed: $(tail -1 "$T/err")"; fi

# 3. a checkpoint write that fails (file-size limit) keeps the previous one
config full "$T/full" 4
"$DMS" train --config "$T/full.json" 2>/dev/null || bad "full: first run"
config full "$T/full" 6
(ulimit -f 200; "$DMS" train --config "$T/full.json" --resume) 2>"$T/err"
rc=$?
[ $rc -eq 1 ] && ok || bad "full: rc $rc"
[ "$(grep -c 'dms train:' "$T/err")" -eq 1 ] && grep -q "ckpt-00000006.h5.tmp: cannot write checkpoint: File too large" "$T/err" && ok ||
  bad "full: $(tail -1 "$T/err")"
[ -f "$T/full/ckpt-00000004.h5" ] && [ ! -e "$T/full/ckpt-00000006.h5" ] && [ -z "$(ls "$T/full" | grep tmp)" ] && ok ||
  bad "full: files $(ls "$T/full")"
if "$DMS" train --config "$T/full.json" --resume 2>"$T/err" && [ -f "$T/full/ckpt-00000006.h5" ]; then ok; else
  bad "full: resume from the kept checkpoint: $(tail -1 "$T/err")"; fi

# 4. shards made by another tokenizer are refused
mkdir -p "$T/othertok"
sed 's/"vocab_size": 512/"vocab_size": 1024/' tests/fixtures/models/tiny_qwen2/config.json >"$T/othertok/config.json"
cp tests/fixtures/tokenizer/tiny_qwen2/tokenizer.json tests/fixtures/tokenizer/tiny_qwen2/tokenizer_config.json "$T/othertok/"
"$DMS" prep --model "$T/othertok" --input "$T/c.jsonl" --output "$T/data2" --max-len 32 --quiet || bad "prep other"
cat >"$T/other.json" <<JSON
{"model": "$M", "data": "$T/data2", "output": "$T/other", "steps": 2, "max_len": 32}
JSON
"$DMS" train --config "$T/other.json" 2>"$T/err"
rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "$T/data2.*tokenizer" "$T/err" && ok || bad "tokenizer: rc $rc: $(cat "$T/err")"

# 5. config errors
echo '{"model": "m", "data": "d", "lr_shedule": "cosine"}' >"$T/typo.json"
"$DMS" train --config "$T/typo.json" 2>"$T/err"
rc=$?
[ $rc -eq 2 ] && grep -q "$T/typo.json: unknown key 'lr_shedule' (did you mean 'lr_schedule'?)" "$T/err" && ok || bad "typo: rc $rc $(cat "$T/err")"
echo '{"model": "m", "data": "d", "variant": "attention"}' >"$T/enum.json"
"$DMS" train --config "$T/enum.json" 2>"$T/err"
[ $? -eq 2 ] && grep -q "'variant' must be one of: adapter, neuron" "$T/err" && ok || bad "enum: $(cat "$T/err")"
"$DMS" train --config "$T/missing.json" 2>"$T/err"
[ $? -eq 2 ] && grep -q "$T/missing.json: cannot open" "$T/err" && ok || bad "missing: $(cat "$T/err")"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
