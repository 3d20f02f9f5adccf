#!/usr/bin/env bash
# export_faults.sh - `dms export` killed midway, through dms_faults ($1: the
# CLI with the test seams) on a 2-step run of the tiny GGUF fixture
# (docs/reliability.md): stopped right after its first shard was written
# (fault point export_shard:1) and killed with SIGKILL, an export leaves no
# DIR, only DIR.tmp-<pid>; a later export succeeds, names that leftover,
# and writes the same files as an uninterrupted export. With --force over
# an existing DIR, a killed export leaves the old DIR as it was.
set -u
DMS=$1
. "$(dirname "$0")/lib/harness.sh"
. "$(dirname "$0")/lib/faults.sh"
fixture_data || bad "prep on the fixture"
fixture_config "$T/run.json" "$T/run" 2
"$DMS" train --config "$T/run.json" 2>"$T/err" || bad "train: $(tail -1 "$T/err")"
# fp32 in 0.1 MB shards: several files, the first written long before the last
X=("$DMS" export --run "$T/run" --dtype fp32 --shard-size 0.1)
"${X[@]}" --out "$T/ref" 2>"$T/err" || bad "uninterrupted export: $(tail -1 "$T/err")"
n=$(ls "$T/ref" | grep -c '^model-.*safetensors$')
[ "$n" -ge 3 ] && [ -f "$T/ref/model.safetensors.index.json" ] && ok || bad "uninterrupted export: files $(ls "$T/ref")"
# same_files A B: the same file names and bytes
same_files() { [ "$(ls "$1")" = "$(ls "$2")" ] && for f in "$1"/*; do cmp -s "$f" "$2/$(basename "$f")" || return 1; done; }

# ---- killed after its first shard ----
DMS_FAULT_AT=export_shard:1 DMS_FAULT_MARKER="$T/marker" "${X[@]}" --out "$T/exp" 2>"$T/err" &
pid=$!
started $pid
if wait_marker "$T/marker" $pid 30; then ok; else bad "the export never wrote its first shard: $(tail -1 "$T/err")"; fi
kill_now $pid
[ ! -e "$T/exp" ] && ok || bad "a killed export left $T/exp: $(ls "$T/exp")"
[ -f "$T/exp.tmp-$pid/model-00001-of-0000$n.safetensors" ] && [ ! -e "$T/exp.tmp-$pid/config.json" ] && ok ||
  bad "expected a partial $T/exp.tmp-$pid: $(ls "$T" "$T/exp.tmp-$pid" 2>&1 | tr '\n' ' ')"
# a later export of the same folder: complete, equal, and the leftover named
if "${X[@]}" --out "$T/exp" 2>"$T/err"; then ok; else bad "export after the kill: $(tail -1 "$T/err")"; fi
same_files "$T/exp" "$T/ref" && ok || bad "the later export differs from the uninterrupted one: $(ls "$T/exp")"
grep -qxF "[dms export] note: $T/exp.tmp-$pid was left by an interrupted export (pid $pid); remove it" "$T/err" && ok ||
  bad "the leftover is not named: $(cat "$T/err")"

# ---- --force over an existing folder, killed: the old folder stays as it was ----
"$DMS" export --run "$T/run" --dtype bf16 --out "$T/old" 2>"$T/err" || bad "bf16 export: $(tail -1 "$T/err")"
cp -r "$T/old" "$T/old-copy"
DMS_FAULT_AT=export_shard:2 DMS_FAULT_MARKER="$T/marker2" "${X[@]}" --out "$T/old" --force 2>"$T/err" &
pid=$!
started $pid
if wait_marker "$T/marker2" $pid 30; then ok; else bad "the --force export never wrote 2 shards: $(tail -1 "$T/err")"; fi
kill_now $pid
same_files "$T/old" "$T/old-copy" && ok || bad "a killed --force export changed $T/old: $(ls "$T/old")"
if "${X[@]}" --out "$T/old" --force 2>"$T/err"; then ok; else bad "--force after the kill: $(tail -1 "$T/err")"; fi
same_files "$T/old" "$T/ref" && ok || bad "--force after the kill differs from the uninterrupted export"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
