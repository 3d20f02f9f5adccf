#!/usr/bin/env bash
# ckpt_faults.sh - checkpoints under faults, through dms_faults ($1: the CLI
# with the test seams) on the tiny GGUF fixture (docs/reliability.md):
#  1. kill -9 while a checkpoint is half written: the previous checkpoint is
#     used by --resume, the half file is dropped, and the run ends with the
#     same metrics and the same exported weights as an uninterrupted run;
#  2. a full disk (ENOSPC injected half-way through the write): one error
#     line naming the file and the checkpoint kept, exit 1, no new file, and
#     a resume from the kept checkpoint ends as the uninterrupted run;
#  3. a bit flipped in the newest checkpoint (caught by its CRC-32) or the
#     file truncated: --resume warns, names it and falls back to the one
#     before it, losing nothing (export refuses the flipped one); with none
#     loadable --resume stops with one line;
#  4. a run folder copied elsewhere resumes from there (output may change)
#     and ends as the uninterrupted run; a resume that changes the method
#     (the window) is refused in one line naming the key and both values;
#  5. a decay branched off a constant run (warm-up / stable / decay): a
#     resume may change the lr schedule where the steps already taken keep
#     their learning rate, and then ends as a fresh run of the new config;
#     one that would change a step already taken is refused by its step.
set -u
DMS=$1
. "$(dirname "$0")/lib/harness.sh"
. "$(dirname "$0")/lib/faults.sh"
fixture_data || bad "prep on the fixture"
# same_as_ref NAME RUN [REF]: RUN's steps and final weights equal those of
# the uninterrupted run REF (default $T/ref; REF-export holds its export)
same_as_ref() {
  local ref=${3:-$T/ref}
  if [ "$(steps_of "$2")" = "$(steps_of "$ref")" ]; then ok; else
    bad "$1: metrics differ from the uninterrupted run: $(diff <(steps_of "$ref") <(steps_of "$2") | head -c 400)"; fi
  if "$DMS" export --run "$2" --out "$2-export" --dtype fp32 2>"$T/exp_err" &&
    cmp -s "$2-export/model.safetensors" "$ref-export/model.safetensors"; then ok; else
    bad "$1: exported weights differ from the uninterrupted run's $(tail -1 "$T/exp_err")"; fi
}

# the uninterrupted run, 8 steps, checkpoints at 2, 4, 6, 8
fixture_config "$T/ref.json" "$T/ref" 8
"$DMS" train --config "$T/ref.json" 2>"$T/err" || bad "reference run: $(tail -1 "$T/err")"
"$DMS" export --run "$T/ref" --out "$T/ref-export" --dtype fp32 2>"$T/err" || bad "reference export: $(tail -1 "$T/err")"

# ---- 1. kill -9 half-way through writing ckpt-4 ----
fixture_config "$T/kill.json" "$T/kill" 8
DMS_FAULT_AT=ckpt_write:4 DMS_FAULT_MARKER="$T/kill.marker" "$DMS" train --config "$T/kill.json" 2>"$T/err" &
pid=$!
started $pid
if wait_marker "$T/kill.marker" $pid 30; then ok; else bad "kill: the run never reached the checkpoint write: $(tail -1 "$T/err")"; fi
kill_now $pid
half=$(stat -c %s "$T/kill/ckpt-00000004.h5.tmp" 2>/dev/null || echo 0)
full=$(stat -c %s "$T/kill/ckpt-00000002.h5" 2>/dev/null || echo 0)
[ ! -e "$T/kill/ckpt-00000004.h5" ] && [ "$half" -gt 0 ] && [ "$half" -lt "$full" ] && ok ||
  bad "kill: expected ckpt-2 and a half-written ckpt-4.tmp, got: $(ls -l "$T/kill" | tail -n +2)"
if "$DMS" train --config "$T/kill.json" --resume 2>"$T/err"; then ok; else bad "kill: resume: $(tail -1 "$T/err")"; fi
grep -q "resuming from $T/kill/ckpt-00000002.h5 at step 2" "$T/err" && ok || bad "kill: $(grep resum "$T/err")"
[ -z "$(ls "$T/kill" | grep tmp)" ] && [ -f "$T/kill/ckpt-00000008.h5" ] && ok || bad "kill: files $(ls "$T/kill")"
same_as_ref kill "$T/kill"

# ---- 2. the disk fills up half-way through writing ckpt-4 ----
fixture_config "$T/full.json" "$T/full" 8
DMS_FAULT_AT=ckpt_write:4 DMS_FAULT_ACTION=enospc "$DMS" train --config "$T/full.json" 2>"$T/err"
rc=$?
[ $rc -eq 1 ] && ok || bad "full: rc $rc"
msg="dms train: $T/full/ckpt-00000004.h5.tmp: cannot write checkpoint: No space left on device; previous checkpoint kept: $T/full/ckpt-00000002.h5"
[ "$(grep -c '^dms train:' "$T/err")" -eq 1 ] && grep -qxF "$msg" "$T/err" && ok || bad "full: $(grep 'dms train' "$T/err")"
[ "$(ls "$T/full" | grep -c ckpt)" -eq 1 ] && [ -f "$T/full/ckpt-00000002.h5" ] && ok || bad "full: files $(ls "$T/full")"
if "$DMS" train --config "$T/full.json" --resume 2>"$T/err"; then ok; else bad "full: resume: $(tail -1 "$T/err")"; fi
grep -q "resuming from $T/full/ckpt-00000002.h5 at step 2" "$T/err" && ok || bad "full: $(grep resum "$T/err")"
same_as_ref full "$T/full"

# ---- 3. a corrupt newest checkpoint: resume falls back to the one before ----
# a run stopped after 6 steps; its ckpt-6 gets one bit flipped in a byte that
# still parses (the stored config's keep_last: '5' -> '7'), so only the
# checksum can tell
fixture_config "$T/flip.json" "$T/flip" 6
"$DMS" train --config "$T/flip.json" 2>"$T/err" || bad "flip: first run: $(tail -1 "$T/err")"
F=$T/flip/ckpt-00000006.h5
off=$(LC_ALL=C grep -obUa $'"keep_last":\t5' "$F" | head -1 | cut -d: -f1)
if [ -n "$off" ]; then
  printf '7' | dd of="$F" bs=1 seek=$((off + 13)) conv=notrunc 2>/dev/null
  LC_ALL=C grep -qa $'"keep_last":\t7' "$F" && ok || bad "flip: the bit was not flipped"
else bad "flip: keep_last not found in $F"; fi
# export names the checkpoint it was asked for: refused, no fallback
"$DMS" export --run "$T/flip" --out "$T/flip-x" 2>"$T/err"
rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "^dms export: $F: checksum mismatch in 'config'" "$T/err" &&
  [ ! -e "$T/flip-x" ] && ok || bad "flip: export: rc $rc: $(cat "$T/err")"
fixture_config "$T/flip.json" "$T/flip" 8
if "$DMS" train --config "$T/flip.json" --resume 2>"$T/err"; then ok; else bad "flip: resume: $(tail -1 "$T/err")"; fi
grep -q "^\[dms\] warning: $F: checksum mismatch in 'config' (crc32 [0-9a-f]*, stored [0-9a-f]*): the checkpoint is corrupt; trying the checkpoint before it$" "$T/err" &&
  ok || bad "flip: no warning: $(head -3 "$T/err")"
grep -q "resuming from $T/flip/ckpt-00000004.h5 at step 4" "$T/err" && ok || bad "flip: $(grep resum "$T/err")"
same_as_ref flip "$T/flip"

# the same with the newest checkpoint cut to half its size
fixture_config "$T/cut.json" "$T/cut" 6
"$DMS" train --config "$T/cut.json" 2>"$T/err" || bad "cut: first run: $(tail -1 "$T/err")"
F=$T/cut/ckpt-00000006.h5
truncate -s $(($(stat -c %s "$F") / 2)) "$F"
fixture_config "$T/cut.json" "$T/cut" 8
if "$DMS" train --config "$T/cut.json" --resume 2>"$T/err"; then ok; else bad "cut: resume: $(tail -1 "$T/err")"; fi
grep -q "^\[dms\] warning: $F: cannot open checkpoint (truncated or corrupt?): .*; trying the checkpoint before it$" "$T/err" &&
  ok || bad "cut: no warning: $(head -3 "$T/err")"
grep -q "resuming from $T/cut/ckpt-00000004.h5 at step 4" "$T/err" && ok || bad "cut: $(grep resum "$T/err")"
same_as_ref cut "$T/cut"

# ---- 4. a run folder copied elsewhere resumes there; a changed method is refused by name ----
fixture_config "$T/orig.json" "$T/orig" 4
"$DMS" train --config "$T/orig.json" 2>"$T/err" || bad "moved: first run: $(tail -1 "$T/err")"
cp -r "$T/orig" "$T/moved"
fixture_config "$T/moved.json" "$T/moved" 8 ', "window": 4'
sed -i 's/"window": 8,//' "$T/moved.json"
"$DMS" train --config "$T/moved.json" --resume 2>"$T/err"
rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ] &&
  grep -q "^dms train: $T/moved/ckpt-00000004.h5: cannot resume: the config differs from the checkpoint's in window (checkpoint 8, config 4); only steps, .* and output may change$" "$T/err" &&
  ok || bad "moved: another window: rc $rc: $(cat "$T/err")"
fixture_config "$T/moved.json" "$T/moved" 8
if "$DMS" train --config "$T/moved.json" --resume 2>"$T/err"; then ok; else bad "moved: resume: $(tail -1 "$T/err")"; fi
grep -q "resuming from $T/moved/ckpt-00000004.h5 at step 4" "$T/err" && ok || bad "moved: $(grep resum "$T/err")"
same_as_ref moved "$T/moved"

# ---- 5. a decay branched off a constant run at its step-4 checkpoint ----
decay=', "lr_schedule": "linear", "decay_steps": 4'
fixture_config "$T/wsd.json" "$T/wsd" 8 "$decay"
"$DMS" train --config "$T/wsd.json" 2>"$T/err" &&
  "$DMS" export --run "$T/wsd" --out "$T/wsd-export" --dtype fp32 2>>"$T/err" || bad "decay: reference run: $(tail -1 "$T/err")"
fixture_config "$T/branch.json" "$T/branch" 4
"$DMS" train --config "$T/branch.json" 2>"$T/err" || bad "decay: constant run: $(tail -1 "$T/err")"
fixture_config "$T/branch.json" "$T/branch" 8 ', "lr_schedule": "linear", "decay_steps": 6'
"$DMS" train --config "$T/branch.json" --resume 2>"$T/err"
rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ] &&
  grep -q "^dms train: $T/branch/ckpt-00000004.h5: cannot resume: the learning rate of step 3, already taken, would change (checkpoint 0.00999999978, config 0.008333" "$T/err" &&
  ok || bad "decay: over steps taken: rc $rc: $(cat "$T/err")"
fixture_config "$T/branch.json" "$T/branch" 8 "$decay"
if "$DMS" train --config "$T/branch.json" --resume 2>"$T/err"; then ok; else bad "decay: resume: $(tail -1 "$T/err")"; fi
grep -q "resuming from $T/branch/ckpt-00000004.h5 at step 4" "$T/err" && ok || bad "decay: $(grep resum "$T/err")"
same_as_ref decay "$T/branch" "$T/wsd"

# none loadable: one error line naming the newest and why
fixture_config "$T/none.json" "$T/none" 2
"$DMS" train --config "$T/none.json" 2>"$T/err" || bad "none: first run: $(tail -1 "$T/err")"
truncate -s 1000 "$T/none/ckpt-00000002.h5"
"$DMS" train --config "$T/none.json" --resume 2>"$T/err"
rc=$?
[ $rc -eq 1 ] && grep -q "^dms train: $T/none: no loadable checkpoint (newest: $T/none/ckpt-00000002.h5: cannot open checkpoint (truncated or corrupt?)" "$T/err" &&
  [ "$(grep -c '^dms train:' "$T/err")" -eq 1 ] && ok || bad "none: rc $rc: $(cat "$T/err")"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
