#!/usr/bin/env bash
# packing_plan.sh - through the real binary ($1): `dms prep --packing`
# (both packings, the tokens each keeps in the summary line and prep.json,
# a bad name refused) and `dms inspect --plan` (the memory plan of a
# training step at real shapes from a config.json alone: every part, the
# total against the device, --tokens, --config, --backend, bad values).
set -u
DMS=$1
. "$(dirname "$0")/lib/harness.sh"
MODEL=${DMS_DEFAULT_GGUF:-models/default.gguf}
if [ ! -f "$MODEL" ]; then
  echo "FAIL packing_plan: $MODEL missing; run scripts/install_deps.sh"
  echo "0 passed, 1 failed"
  exit 1
fi
# json_num FILE KEY: the first number stored under KEY
json_num() { grep -E "\"$2\":" "$1" | head -1 | sed -E 's/.*:[[:space:]]*([0-9]+).*/\1/'; }

for i in $(seq 1 30); do
  echo "{\"text\": \"Document $i: a few words that make a document of a dozen tokens or more, number $i.\"}"
done >"$T/c.jsonl"

# --- dms prep --packing ---
expect_ok prep-documents -- "$DMS" prep --model "$MODEL" --input "$T/c.jsonl" --output "$T/doc" --max-len 64
sum_doc=$(grep "rows of 64" "$T/err")
expect_ok prep-reference -- "$DMS" prep --model "$MODEL" --input "$T/c.jsonl" --output "$T/ref" --max-len 64 --packing reference
sum_ref=$(grep "rows of 64" "$T/err")
if echo "$sum_ref" | grep -Eq "packing reference \(tokens kept: documents [0-9]+, reference [0-9]+"; then ok
else bad "summary line without the tokens each packing keeps: $sum_ref"; fi
if grep -Eq '"packing":[[:space:]]*"reference"' "$T/ref/prep.json"; then ok; else bad "prep.json: packing"; fi
if grep -Eq '"packing":[[:space:]]*"documents"' "$T/doc/prep.json"; then ok; else bad "prep.json: default packing"; fi
kd=$(grep -A3 tokens_kept "$T/ref/prep.json" | grep '"documents"' | sed -E 's/[^0-9]*([0-9]+).*/\1/')
kr=$(grep -A3 tokens_kept "$T/ref/prep.json" | grep '"reference"' | sed -E 's/[^0-9]*([0-9]+).*/\1/')
rows_doc=$(json_num "$T/doc/prep.json" rows)
rows_ref=$(json_num "$T/ref/prep.json" rows)
# each packing keeps its full rows; reference drops every row's overflow
if [ -n "$kd" ] && [ -n "$kr" ] && [ "$kd" -eq $((rows_doc * 64)) ] && [ "$kr" -eq $((rows_ref * 64)) ] &&
   [ "$kr" -lt "$kd" ]; then ok
else bad "tokens kept: documents '$kd' (rows $rows_doc), reference '$kr' (rows $rows_ref)"; fi
if echo "$sum_doc" | grep -q "documents $kd, reference $kr"; then ok; else bad "summary counts differ: $sum_doc"; fi
expect_error bad-packing "--packing must be documents or reference \(got 'concat'\)" -- \
  "$DMS" prep --model "$MODEL" --input "$T/c.jsonl" --output "$T/bad" --packing concat

# --- dms inspect --plan ---
expect_ok plan -- "$DMS" inspect --plan bench/models/qwen3_8b --backend cuda
for part in "rows of 32768 tokens" "base weights (bf16)" "trainable DMS heads" "Adam moments" \
            "activations kept for the backward" "one layer's activations (recomputed)" "KD chunk logits" \
            "op workspace (CUDA scratch)" "fits one 80 GiB device"; do
  if grep -qF "$part" "$T/out"; then ok; else bad "plan: no '$part' in: $(head -c 1500 "$T/out")"; fi
done
if grep -q "other trainer memory" "$T/out"; then bad "plan: trainer memory not attributed"; else ok; fi
total() { grep -E "^  total" "$T/out" | awk '{print $2}'; }
t32=$(total)
expect_ok plan-128k -- "$DMS" inspect --plan bench/models/qwen3_8b --backend cuda --tokens 131072
t128=$(total)
if awk "BEGIN {exit !($t128 > 3 * $t32)}"; then ok; else bad "plan: 128K tokens total $t128 vs 32K $t32"; fi
if grep -q "does NOT fit one 80 GiB device" "$T/out"; then ok; else bad "plan: 128K tokens should not fit"; fi
expect_ok plan-cpu -- "$DMS" inspect --plan bench/models/llama3.2_1b --tokens 4096 --threads 2
if grep -qF "base weights (fp32)" "$T/out" && grep -qF "attention tiles" "$T/out"; then ok; else bad "plan: cpu"; fi
expect_ok plan-config -- "$DMS" inspect --plan bench/models/qwen3_8b --config configs/qwen3_8b_dms8x.json --backend cuda
if grep -qF "rows of 32768 tokens" "$T/out"; then ok; else bad "plan: --config max_len"; fi
# attention guidance's buffers are attributed too
printf '{"model": "m", "data": "d", "max_len": 4096, "guide_weight": 1}\n' >"$T/guide.json"
expect_ok plan-guide -- "$DMS" inspect --plan bench/models/qwen3_8b --config "$T/guide.json" --backend cuda
if grep -qF "rows of 4096 tokens" "$T/out" && ! grep -q "other trainer memory" "$T/out"; then ok
else bad "plan with guidance: $(head -c 1500 "$T/out")"; fi
expect_error plan-backend "--backend must be cpu or cuda" -- "$DMS" inspect --plan bench/models/qwen3_8b --backend tpu
expect_error plan-tokens "--tokens and --gpu-gib must be positive" -- \
  "$DMS" inspect --plan bench/models/qwen3_8b --tokens -5
expect_error plan-missing "nope: cannot open" -- "$DMS" inspect --plan "$T/nope"
expect_ok help -- "$DMS" inspect --help
for flag in --plan --tokens --backend --config --gpu-gib; do
  if grep -q -- "$flag" "$T/out"; then ok; else bad "help: $flag undocumented"; fi
done

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
