#!/usr/bin/env bash
# bad_input.sh - every kind of bad input gets a one-line error naming the
# file and the problem, and a non-zero exit, never a crash. Runs the real
# binary ($1) against damaged copies of the committed fixtures.
set -u
DMS=$1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0

# expect_error NAME PATTERN -- command...: non-zero exit (not a signal), one
# stderr line, matching PATTERN (extended regex).
expect_error() {
  local name=$1 pattern=$2; shift 3
  "$@" >"$T/out" 2>"$T/err"
  local rc=$? lines
  lines=$(wc -l <"$T/err")
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && [ "$lines" -eq 1 ] && grep -Eq -- "$pattern" "$T/err"; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL $name: rc=$rc lines=$lines stderr: $(head -c 600 "$T/err")"
  fi
}

expect_ok() {
  local name=$1; shift 2
  if "$@" >"$T/out" 2>"$T/err"; then pass=$((pass + 1)); else
    fail=$((fail + 1)); echo "FAIL $name: rc=$? $(head -c 600 "$T/err")"; fi
}

SRC=tests/fixtures/models/tiny_llama
fresh() { rm -rf "$T/m"; cp -r "$SRC" "$T/m"; }

# --- command line ---
expect_error unknown-command "unknown command 'frobnicate'" -- "$DMS" frobnicate
expect_error unknown-flag "unknown flag '--bogus'" -- "$DMS" generate --bogus 1
expect_error bad-number "expects a number" -- "$DMS" generate --prompt x --temperature abc
expect_error unknown-backend "unknown backend 'tpu' \\(available: cpu" -- "$DMS" generate --backend tpu --prompt x
expect_error train-unknown-backend "unknown backend 'tpu'" -- "$DMS" train --config configs/demo.json --backend tpu
# cuda: not built into this binary, or built but no GPU here: either way one line
expect_error cuda-unavailable "cuda: no usable GPU|backend .cuda. is not built" -- "$DMS" generate --backend cuda --prompt x --model "$SRC"
expect_ok help-top -- "$DMS" --help
expect_ok help-generate -- "$DMS" generate --help
expect_ok help-inspect -- "$DMS" inspect --help

# --- missing files ---
expect_error missing-model "$T/nope.*(cannot open|No such)" -- "$DMS" inspect "$T/nope.gguf"
fresh; rm "$T/m/model.safetensors"
expect_error missing-weights "$T/m.*no model.safetensors" -- "$DMS" inspect --check "$T/m"
fresh
expect_error missing-tokenizer "$T/m.*missing tokenizer" -- "$DMS" generate --model "$T/m" --prompt hi

# --- safetensors damage ---
fresh; head -c 4 "$SRC/model.safetensors" >"$T/m/model.safetensors"
expect_error st-too-short "$T/m/model.safetensors.*too short" -- "$DMS" inspect "$T/m"
fresh; head -c 200 "$SRC/model.safetensors" >"$T/m/model.safetensors"
expect_error st-truncated-header "$T/m/model.safetensors.*header length runs past end" -- "$DMS" inspect "$T/m"
fresh; size=$(stat -c %s "$SRC/model.safetensors"); head -c $((size - 100)) "$SRC/model.safetensors" >"$T/m/model.safetensors"
expect_error st-truncated-data "$T/m/model.safetensors.*runs past end of file" -- "$DMS" inspect "$T/m"
fresh; printf '\x10\x00\x00\x00\x00\x00\x00\x00{"a": not json }' >"$T/m/model.safetensors"
expect_error st-bad-json "$T/m/model.safetensors.*not valid JSON" -- "$DMS" inspect "$T/m"
fresh; hdr='{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,999999]}}'
printf "$(printf '\\x%02x' ${#hdr})\x00\x00\x00\x00\x00\x00\x00%s0123456789abcdef" "$hdr" >"$T/m/model.safetensors"
expect_error st-offset-past-eof "$T/m/model.safetensors.*'x'.*runs past end of file" -- "$DMS" inspect "$T/m"
fresh; hdr='{"x":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}'
printf "$(printf '\\x%02x' ${#hdr})\x00\x00\x00\x00\x00\x00\x00%s0123456789abcdef" "$hdr" >"$T/m/model.safetensors"
expect_error st-size-mismatch "$T/m/model.safetensors.*'x' holds 16 bytes" -- "$DMS" inspect "$T/m"

# --- config damage ---
fresh; sed -i 's/"hidden_size": 64/"hidden_size": 96/' "$T/m/config.json"
expect_error shape-mismatch "$T/m.*'model.embed_tokens.weight' has shape \[512x64\], config expects \[512x96\]" -- \
  "$DMS" inspect --check "$T/m"
fresh
expect_ok inspect-check-ok -- "$DMS" inspect --check "$T/m"
fresh; sed -i 's/"model_type": "llama"/"model_type": "gpt2"/; s/LlamaForCausalLM/GPT2LMHeadModel/' "$T/m/config.json"
expect_error unknown-arch "$T/m/config.json.*unknown architecture 'gpt2'" -- "$DMS" inspect "$T/m"
fresh; echo '{ not json' >"$T/m/config.json"
expect_error bad-config "$T/m/config.json.*not valid JSON" -- "$DMS" inspect "$T/m"

# --- GGUF damage (from the embedded model, if the setup put it there) ---
G=${DMS_DEFAULT_GGUF:-models/default.gguf}
if [ -f "$G" ]; then
  head -c 100 "$G" >"$T/trunc.gguf"
  expect_error gguf-truncated "$T/trunc.gguf" -- "$DMS" inspect "$T/trunc.gguf"
  head -c 5000000 "$G" >"$T/cut.gguf"
  expect_error gguf-data-cut "$T/cut.gguf.*past end" -- "$DMS" inspect "$T/cut.gguf"
  printf 'GGUF\x03\x00\x00\x00' >"$T/short.gguf"
  expect_error gguf-short-header "$T/short.gguf" -- "$DMS" inspect "$T/short.gguf"
  printf 'NOPE\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00' >"$T/magic.gguf"
  expect_error gguf-magic "$T/magic.gguf" -- "$DMS" inspect "$T/magic.gguf"
else
  fail=$((fail + 1)); echo "FAIL gguf: $G missing; run scripts/install_deps.sh"
fi

# --- DMS checkpoints (NVIDIA's layout, tests/fixtures/nvidia) ---
NV=tests/fixtures/nvidia/adapter
nvcopy() { rm -rf "$T/nv"; cp -r "$NV" "$T/nv"; }
nvcopy
sed -i 's/"dms_window_size": 8/"dms_window_size": 4/' "$T/nv/config.json"
expect_error dms-window-not-above-block "$T/nv/config.json: dms_window_size 4 must be larger than dms_paged_attention_block_size 4" \
  -- "$DMS" inspect "$T/nv"
nvcopy
sed -i 's/"dms_separate_alpha": true/"dms_separate_alpha": "yes"/' "$T/nv/config.json"
expect_error dms-field-type "$T/nv/config.json: 'dms_separate_alpha' must be true or false" -- "$DMS" inspect "$T/nv"
nvcopy
sed -i 's/"dms_alpha_scale": 100.0/"dms_alpha_scale": "100"/' "$T/nv/config.json"
expect_error dms-number-type "'dms_alpha_scale' must be a number" -- "$DMS" inspect "$T/nv"
# an adapter checkpoint whose layer-0 head has the wrong shape, and one without its heads
nvcopy
python3 - "$T/nv/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]; b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); t = h["model.layers.0.self_attn.dms_proj_alpha.weight"]
t["shape"] = [1, t["shape"][0] * t["shape"][1]]  # same bytes, wrong shape
hb = json.dumps(h).encode(); hb += b" " * (-len(hb) % 8)
open(p, "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
PY
expect_error dms-head-shape "tensor 'model.layers.0.self_attn.dms_proj_alpha.weight' has shape \\[1x128\\], config expects \\[2x64\\]" \
  -- "$DMS" inspect "$T/nv" --check
nvcopy
python3 - "$T/nv/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]; b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); h["model.layers.1.self_attn.dms_proj_alpha_renamed.weight"] = h.pop("model.layers.1.self_attn.dms_proj_alpha.weight")
hb = json.dumps(h).encode(); hb += b" " * (-len(hb) % 8)
open(p, "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
PY
expect_error dms-head-missing "missing tensor 'model.layers.1.self_attn.dms_proj_alpha.weight'" -- "$DMS" inspect "$T/nv" --check

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
