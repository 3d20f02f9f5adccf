#!/usr/bin/env bash
# export.sh - `dms export` through the real binary ($1): --help; the
# refusals of bad input (one line naming the file, non-zero exit, nothing
# left behind); --force replacing a folder only once the new one is
# complete, and a failed write (file-size limit, as on a full disk) leaving
# the old folder intact; then a real 2-step run on the tiny GGUF fixture
# (tests/fixtures/export/tiny_llama.gguf) exported: synthesised config.json
# (llama3 rope recovered), tokenizer.json that tokenizes as the GGUF does
# (a run on the export reads shards made with the GGUF), shards, generate;
# and the same on the embedded SmolLM2 (models/default.gguf).
set -u
DMS=$1
. "$(dirname "$0")/lib/harness.sh"
G=tests/fixtures/export/tiny_llama.gguf
M=${DMS_DEFAULT_GGUF:-models/default.gguf}

# expect_error NAME PATTERN -- command...: exit 1 or 2, one stderr line matching PATTERN
expect_error() {
  local name=$1 pattern=$2; shift 3
  "$@" >"$T/out" 2>"$T/err"
  local rc=$? lines
  lines=$(wc -l <"$T/err")
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && [ "$lines" -eq 1 ] && grep -Eq -- "$pattern" "$T/err"; then ok; else
    bad "$name: rc=$rc lines=$lines stderr: $(head -c 600 "$T/err")"; fi
}

# --- help ---
"$DMS" export --help >"$T/help" 2>&1 && ok || bad "help: rc $?"
for flag in --run --step --out --dtype --force --shard-size --model; do
  grep -q -- "$flag" "$T/help" && ok || bad "help does not document $flag"
done
grep -q "dms export --run" "$T/help" && grep -q "example" "$T/help" && ok || bad "help has no example"
"$DMS" --help | grep -q "export" && ok || bad "top-level help does not list export"

# --- a tiny run on the GGUF fixture: 2 steps, checkpoints at 1 and 2 ---
for i in $(seq 1 12); do
  echo "{\"text\": \"Sample $i. Hello world! The key-value cache grows with every token; evicting tokens keeps $((i + 3))x.\"}"
done >"$T/c.jsonl"
"$DMS" prep --model "$G" --input "$T/c.jsonl" --output "$T/data" --max-len 32 --quiet && ok || bad "prep on the fixture"
cat >"$T/run.json" <<JSON
{"model": "$G", "data": "$T/data", "output": "$T/run", "steps": 2, "max_len": 32, "window": 8, "lr": 0.01,
 "cr_final": 2, "steps_per_cr": 1, "save_every": 1, "keep_last": 5, "lora_rank": 2}
JSON
"$DMS" train --config "$T/run.json" 2>"$T/err" && ok || bad "train on the fixture: $(tail -1 "$T/err")"

# --- bad input ---
expect_error no-args "--run and --out are required" -- "$DMS" export --run "$T/run"
expect_error bad-dtype "unknown --dtype 'fp8'" -- "$DMS" export --run "$T/run" --out "$T/x" --dtype fp8
expect_error bad-shard "--shard-size must be positive" -- "$DMS" export --run "$T/run" --out "$T/x" --shard-size 0
expect_error no-run "$T/nope: no such run folder" -- "$DMS" export --run "$T/nope" --out "$T/x"
mkdir -p "$T/empty"
expect_error no-checkpoint "$T/empty: no checkpoint" -- "$DMS" export --run "$T/empty" --out "$T/x"
expect_error missing-step "$T/run/ckpt-00000009.h5: no such checkpoint \\(--step 9\\)" -- \
  "$DMS" export --run "$T/run" --step 9 --out "$T/x"
[ -f "$M" ] && expect_error shape-mismatch \
  "ckpt-00000002.h5: tensor 'params/model.layers.0.self_attn.dms_proj_alpha.weight' has shape \\[2 x 64\\], the model expects \\[3 x 576\\]" -- \
  "$DMS" export --run "$T/run" --model "$M" --out "$T/x"
mkdir -p "$T/full" && echo old >"$T/full/keep.txt"
expect_error not-empty "$T/full: exists and is not empty \\(use --force" -- "$DMS" export --run "$T/run" --out "$T/full"
expect_error into-run "holds the run folder" -- "$DMS" export --run "$T/run" --out "$T" --force
[ ! -e "$T/x" ] && [ -f "$T/full/keep.txt" ] && ok || bad "a refused export left files: $(ls "$T")"

# a write that fails half-way (file-size limit) leaves the old folder as it was, and no temporary folder
(ulimit -f 100; "$DMS" export --run "$T/run" --out "$T/full" --force --dtype fp32) >/dev/null 2>"$T/err"
rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "$T/full.tmp-[0-9]*/model.safetensors: cannot write.*File too large" "$T/err" &&
  ok || bad "full disk: rc $rc: $(cat "$T/err")"
[ -f "$T/full/keep.txt" ] && [ ! -e "$T/full/config.json" ] && [ -z "$(ls "$T" | grep tmp-)" ] && ok ||
  bad "full disk: left $(ls "$T" "$T/full")"

# --force replaces it once the new folder is complete
"$DMS" export --run "$T/run" --out "$T/full" --force 2>"$T/err" && ok || bad "force: $(tail -1 "$T/err")"
[ ! -e "$T/full/keep.txt" ] && [ -f "$T/full/model.safetensors" ] && [ -f "$T/full/config.json" ] && ok ||
  bad "force: $(ls "$T/full")"
grep -q "model.safetensors (1/1)" "$T/err" && grep -q "variant adapter, dtype bf16" "$T/err" && ok ||
  bad "progress/summary: $(cat "$T/err")"

# --- the export of the GGUF run: a complete Hugging Face folder ---
"$DMS" export --run "$T/run" --step 1 --out "$T/exp" --dtype fp32 --shard-size 0.2 2>"$T/err" && ok ||
  bad "export: $(tail -1 "$T/err")"
grep -q "from $T/run/ckpt-00000001.h5 (step 1)" "$T/err" && ok || bad "--step 1: $(tail -1 "$T/err")"
for f in config.json model.safetensors.index.json model-00001-of-00003.safetensors tokenizer.json \
         tokenizer_config.json generation_config.json; do
  [ -f "$T/exp/$f" ] && ok || bad "export lacks $f: $(ls "$T/exp")"
done
grep -q '"rope_type": "llama3"' "$T/exp/config.json" && grep -q '"original_max_position_embeddings": 64' "$T/exp/config.json" &&
  grep -q '"architectures": \["LlamaForCausalLM"\]' "$T/exp/config.json" && grep -q '"torch_dtype": "float32"' "$T/exp/config.json" &&
  grep -q '"dms_separate_alpha": true' "$T/exp/config.json" && grep -q '"dms_paged_attention_block_size": 4' "$T/exp/config.json" &&
  ok || bad "config.json: $(cat "$T/exp/config.json")"
grep -q '"add_bos_token": true' "$T/exp/tokenizer_config.json" && grep -q '"chat_template"' "$T/exp/tokenizer_config.json" &&
  grep -q '"PreTrainedTokenizerFast"' "$T/exp/tokenizer_config.json" && ok || bad "tokenizer_config.json"
"$DMS" inspect "$T/exp" >"$T/insp" 2>&1 && grep -q "pre=llama3" "$T/insp" && grep -q "512 tokens" "$T/insp" && ok ||
  bad "inspect export: $(cat "$T/insp")"
"$DMS" generate --model "$T/exp" --raw --prompt "Hello world" --max-tokens 4 >/dev/null 2>"$T/err" && ok ||
  bad "generate on the export: $(tail -1 "$T/err")"
# shards made with the GGUF's tokenizer are accepted by a run on the export: the same tokenizer (hash)
cat >"$T/run2.json" <<JSON
{"model": "$T/exp", "data": "$T/data", "output": "$T/run2", "steps": 1, "max_len": 32, "window": 8}
JSON
"$DMS" train --config "$T/run2.json" 2>"$T/err" && ok || bad "train on the export with the GGUF's shards: $(tail -1 "$T/err")"

# --- the embedded SmolLM2: a 2-step run and its bf16 export ---
if [ -f "$M" ]; then
  "$DMS" prep --model "$M" --input "$T/c.jsonl" --output "$T/sdata" --max-len 32 --quiet || bad "prep smollm2"
  cat >"$T/s.json" <<JSON
{"model": "$M", "data": "$T/sdata", "output": "$T/srun", "steps": 2, "max_len": 32, "window": 16, "lr": 0.0005,
 "cr_final": 4, "steps_per_cr": 40, "save_every": 2, "kd_chunk": 64, "compression_weight": 4}
JSON
  "$DMS" train --config "$T/s.json" 2>"$T/err" && ok || bad "train smollm2: $(tail -1 "$T/err")"
  "$DMS" export --run "$T/srun" --out "$T/sexp" 2>"$T/err" && ok || bad "export smollm2: $(tail -1 "$T/err")"
  grep -q "332 tensors, 269.2 MB in 1 file(s); variant adapter, dtype bf16" "$T/err" && ok || bad "smollm2 summary: $(tail -1 "$T/err")"
  "$DMS" generate --model "$T/sexp" --prompt "What is 7*8?" --max-tokens 8 >/dev/null 2>"$T/err" && ok ||
    bad "generate smollm2 export: $(tail -1 "$T/err")"
else
  bad "$M missing; run scripts/install_deps.sh"
fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
