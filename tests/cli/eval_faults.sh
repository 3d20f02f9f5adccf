#!/usr/bin/env bash
# eval_faults.sh - `dms eval` killed midway resumes without loss, through
# dms_faults ($1: the CLI with the test seams) on the tiny GGUF fixture
# (docs/reliability.md): the run is stopped right after its 3rd item reached
# the JSONL (fault point eval_item:3) and killed with SIGKILL; the rerun
# skips those 3 items, runs the other 3, and its JSONL and result JSON equal
# those of an uninterrupted run (wall-clock fields aside).
set -u
DMS=$1
. "$(dirname "$0")/lib/harness.sh"
. "$(dirname "$0")/lib/faults.sh"
cat >"$T/aime.jsonl" <<'JSONL'
{"problem": "What is 2 + 3? Put the final answer in \\boxed{}.", "answer": "5"}
{"problem": "What is 10 times 4? Put the final answer in \\boxed{}.", "answer": 40}
{"problem": "What is 7 + 8? Put the final answer in \\boxed{}.", "answer": "015"}
JSONL
# 3 problems x 2 samples, H2O over a 32-token budget (the prompts are longer)
E=("$DMS" eval --model "$FIXTURE_GGUF" --threads 1 --quiet --task aime --data "$T/aime.jsonl" --policy h2o
  --budget 32 --samples 2 --max-tokens 12 --batch 2 --tag t)
# what must not depend on being interrupted: the items (in key order) and the
# result JSON before its item list, less the wall clock, the output folder
# and the throughput of this invocation alone
items() { sed -E 's/"seconds":[^,]*,//' "$1/aime-h2o-t.jsonl" | sort; }
result() {
  awk '/^\t"items":/ { exit } /^\t"throughput":/ { skip = 1 } !skip { print } skip && /^\t},?$/ { skip = 0 }' \
    "$1/aime-h2o-t.json" | grep -vE '"(created|out)":'
}

if "${E[@]}" --out "$T/ref" >"$T/out" 2>"$T/err"; then ok; else bad "uninterrupted run: $(cat "$T/err")"; fi
[ "$(wc -l <"$T/ref/aime-h2o-t.jsonl")" -eq 6 ] && ok || bad "uninterrupted run: $(wc -l <"$T/ref/aime-h2o-t.jsonl") items"

DMS_FAULT_AT=eval_item:3 DMS_FAULT_MARKER="$T/marker" "${E[@]}" --out "$T/cut" >"$T/out" 2>"$T/err" &
pid=$!
started $pid
if wait_marker "$T/marker" $pid 30; then ok; else bad "the run never logged its 3rd item: $(cat "$T/err")"; fi
kill_now $pid
[ "$(wc -l <"$T/cut/aime-h2o-t.jsonl")" -eq 3 ] && [ ! -e "$T/cut/aime-h2o-t.json" ] && ok ||
  bad "after the kill: $(wc -l <"$T/cut/aime-h2o-t.jsonl") items logged, files: $(ls "$T/cut")"

if "${E[@]}" --out "$T/cut" >"$T/out" 2>"$T/err"; then ok; else bad "rerun: $(cat "$T/err")"; fi
grep -q "written .*aime-h2o-t.json (6 of 6 items; 3 now, 3 from before)" "$T/out" && ok || bad "rerun: $(cat "$T/out")"
[ "$(items "$T/cut")" = "$(items "$T/ref")" ] && ok ||
  bad "the resumed items differ: $(diff <(items "$T/ref") <(items "$T/cut") | head -c 600)"
[ "$(result "$T/cut")" = "$(result "$T/ref")" ] && result "$T/ref" | grep -q '"pass@1"' && ok ||
  bad "the resumed result differs: $(diff <(result "$T/ref") <(result "$T/cut") | head -c 600)"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
