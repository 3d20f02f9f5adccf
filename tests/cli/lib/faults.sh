# faults.sh - sourced after harness.sh by the fault drills (tests/cli/*_faults.sh),
# which run dms_faults: the CLI with the test seams of tests/seams/fault_seams.c.
# A drill stops the program at a named fault point (core/fault_point.h):
#   DMS_FAULT_AT=where:n DMS_FAULT_MARKER=FILE dms_faults ... &
# the seam writes FILE (its pid) and blocks; wait_marker waits for FILE, and
# the drill then kills at that deterministic place (no sleep decides when).
# Every process a drill starts is registered with `started PID` and killed
# on exit, so a failed drill leaves nothing blocked behind.
FAULT_PIDS=""
started() { FAULT_PIDS="$FAULT_PIDS $1"; }
trap 'for p in $FAULT_PIDS; do kill -9 "$p" 2>/dev/null; done; rm -rf "$T"' EXIT

# wait_marker FILE PID SECONDS: 0 once FILE exists and names PID (the
# program itself, started in the background as a simple command, not in a
# subshell or function); 1 when PID ended first or SECONDS passed (polls
# every 50 ms).
wait_marker() {
  local i
  for ((i = 0; i < $3 * 20; i++)); do
    [ -s "$1" ] && break
    kill -0 "$2" 2>/dev/null || break
    sleep 0.05
  done
  [ -s "$1" ] || return 1
  [ "$(cat "$1")" = "$2" ] || { echo "FAIL marker $1 names pid $(cat "$1"), not $2"; started "$(cat "$1")"; return 1; }
}

# kill_now PID: SIGKILL, reaped quietly (bash reports no "Killed" line).
kill_now() {
  kill -9 "$1" 2>/dev/null
  wait "$1" 2>/dev/null
  return 0
}

# fixture_data: 12 short documents tokenized with the tiny GGUF fixture into
# $T/data (a training step on it takes milliseconds).
FIXTURE_GGUF=tests/fixtures/export/tiny_llama.gguf
fixture_data() {
  local i
  for i in $(seq 1 12); do
    echo "{\"text\": \"Sample $i. Hello world! The key-value cache grows with every token; evicting tokens keeps $((i + 3))x.\"}"
  done >"$T/c.jsonl"
  "$DMS" prep --model "$FIXTURE_GGUF" --input "$T/c.jsonl" --output "$T/data" --max-len 32 --quiet
}

# fixture_config FILE OUTPUT STEPS [EXTRA_JSON]: a run on that data, a
# checkpoint every 2 steps, all of them kept.
fixture_config() {
  cat >"$1" <<JSON
{"model": "$FIXTURE_GGUF", "data": "$T/data", "output": "$2", "steps": $3, "max_len": 32, "window": 8,
 "lr": 0.01, "cr_final": 2, "steps_per_cr": 1, "save_every": 2, "keep_last": 5, "lora_rank": 2, "threads": 1${4:-}}
JSON
}

# steps_of RUN: RUN/metrics.jsonl, one line per step (the last one logged:
# a resumed run logs again the steps after its checkpoint), without the
# wall-clock fields: two runs that trained the same tensors print the same.
steps_of() {
  sed -E 's/"tok_s":[^,]*,//; s/"elapsed_s":[^,]*,//' "$1/metrics.jsonl" |
    awk '{ match($0, /"step":[0-9]+/); k = substr($0, RSTART, RLENGTH); last[k] = $0; if (!(k in seen)) { seen[k] = 1; order[n++] = k } }
         END { for (i = 0; i < n; i++) print last[order[i]] }'
}
