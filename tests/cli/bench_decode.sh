#!/usr/bin/env bash
# bench_decode.sh - `dms bench decode --cpu` and `--kv-dtype` through the
# real binary ($1): the refusals (one stderr line); a short run of the
# embedded model (models/default.gguf) with a python that cannot import
# llama_cpp: one stdout line says the peer was not run, ours is still
# timed, and the JSON holds both contexts, the reason the peer is
# missing, the CPU, threads and load averages; `dms generate --kv-dtype
# f16` holds half the KV bytes of f32; --base refuses a model that is not
# a DMS export.
set -u
DMS=$1
. "$(dirname "$0")/lib/harness.sh"
M=${DMS_DEFAULT_GGUF:-models/default.gguf}
[ -e "$M" ] || { echo "no embedded model at $M (scripts/install_deps.sh)"; exit 77; }

# --- refusals ---
expect_error "no --cpu" "only --cpu" -- "$DMS" bench decode
expect_error "kv dtype" "kv-dtype" -- "$DMS" bench decode --cpu --kv-dtype q8
expect_error "contexts" "contexts" -- "$DMS" bench decode --cpu --contexts 16 --tokens 32
expect_error "generate kv dtype" "unknown --kv-dtype" -- "$DMS" generate --prompt hi --kv-dtype q4
expect_error "eval kv dtype" "unknown --kv-dtype" -- "$DMS" eval --task kl --policy full --kv-dtype x
"$DMS" bench --help 2>&1 | grep -q -- "--dms8" && ok || bad "bench help does not document --dms8"

# --- a short run without the peer ---
printf '#!/bin/sh\necho "{\\"error\\": \\"llama-cpp-python not importable (test)\\"}"\nexit 3\n' >"$T/py"
chmod +x "$T/py"
if "$DMS" bench decode --cpu --model "$M" --contexts 48,80 --tokens 8 --threads 1 --python "$T/py" \
    --out "$T/res" >"$T/out" 2>"$T/err"; then ok; else bad "bench run: rc=$? $(head -c 600 "$T/err")"; fi
[ "$(grep -c "peer not run" "$T/out")" = 1 ] && ok || bad "the missing peer is not said in one line: $(cat "$T/out")"
grep -Eq "^48 +dms_vanilla" "$T/out" && grep -Eq "^80 +dms_vanilla" "$T/out" && ok || bad "ours not timed: $(cat "$T/out")"
J=$(ls "$T"/res/cpu_decode-*.json 2>/dev/null | head -1)
if [ -n "$J" ] && python3 - "$J" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["threads"] == 1 and d["kv_dtype"] == "f16" and d["cpu"] and d["loadavg_start"] and d["loadavg_end"]
assert "not importable" in d["llama_cpp_missing"]
rows = d["contexts"]
assert [r["context"] for r in rows] == [48, 80]
for r in rows:
    v = r["dms_vanilla"]
    assert v["prompt_tokens"] == r["context"] - 8 and v["new_tokens"] == 8 and v["decode_tok_s"] > 0
    # f16 rows: the bytes held are half of what fp32 rows of the same blocks take
    assert v["kv_bytes_held"] > 0 and v["kv_dtype"] == "f16"
    assert "llama_cpp" not in r
PY
then ok; else bad "results JSON: $J"; fi

# --- the f16 cache holds half the bytes of the f32 one (same tokens, same blocks) ---
"$DMS" generate --model "$M" --prompt "The history of the printing press" --raw --max-tokens 4 --threads 1 \
  --kv-dtype f32 --stats-json "$T/s32.json" >/dev/null 2>&1 &&
"$DMS" generate --model "$M" --prompt "The history of the printing press" --raw --max-tokens 4 --threads 1 \
  --kv-dtype f16 --stats-json "$T/s16.json" >/dev/null 2>&1 && ok || bad "generate --kv-dtype"
python3 -c "
import json; a = json.load(open('$T/s32.json')); b = json.load(open('$T/s16.json'))
assert b['kv_dtype'] == 'f16' and a['kv_dtype'] == 'f32' and 2 * b['kv_bytes_held'] == a['kv_bytes_held'], (a, b)
" && ok || bad "f16 cache bytes"

# --- --base refuses a model that is not a DMS export of it ---
expect_error "base not a DMS model" "not an adapter-variant" -- \
  "$DMS" generate --model "$M" --base "$M" --prompt hi --max-tokens 1

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
