#!/usr/bin/env bash
# valgrind.sh [BUILD_DIR] - Valgrind memcheck of the whole CLI pipeline on
# the tiny GGUF fixture (tests/fixtures/export/tiny_llama.gguf: 2 layers,
# hidden 64, 512 tokens, with a tokenizer and a Llama 3 chat template), as
# tests/cli/export.sh drives it: dms prep (12 documents), dms train (3 steps,
# adapter heads + LoRA, a checkpoint every step), dms export (fp32, two
# shards), then dms generate from the export with DMS eviction and from the
# GGUF with TOVA, each run under
#   valgrind --error-exitcode=1 --leak-check=full
# (one thread: OMP_NUM_THREADS=1 / --threads 1). Fails on the first run
# with a memory error or a definite/possible leak. BUILD_DIR (default
# build-valgrind) is configured and built first with symbols (-O1 -g),
# CPU only, without MPI. Third-party noise is suppressed narrowly in
# scripts/valgrind.supp (each entry says why). About a minute after the
# build (docs/fuzzing.md has the last result).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build-valgrind}
command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind not found (apt-get install valgrind)" >&2; exit 2; }
nice -n 19 cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS="-O1 -g" -DDMS_CUDA=OFF -DDMS_MPI=OFF >/dev/null
nice -n 19 cmake --build "$B" --target dms -j"${VALGRIND_BUILD_JOBS:-1}" >/dev/null
DMS="$B/dms"
G=tests/fixtures/export/tiny_llama.gguf
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
VG=(nice -n 19 valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,possible
    --show-leak-kinds=definite,possible --track-origins=yes --suppressions=scripts/valgrind.supp --num-callers=30)

for i in $(seq 1 12); do
  echo "{\"text\": \"Sample $i. Hello world! The key-value cache grows with every token; evicting tokens keeps $((i + 3))x.\"}"
done >"$T/c.jsonl"
cat >"$T/run.json" <<JSON
{"model": "$G", "data": "$T/data", "output": "$T/run", "steps": 3, "max_len": 32, "window": 8, "lr": 0.01,
 "cr_final": 2, "steps_per_cr": 1, "save_every": 1, "keep_last": 2, "lora_rank": 2, "threads": 1}
JSON

step() { # step NAME -- command...
  local name=$1; shift 2
  local t0=$SECONDS
  if "${VG[@]}" --log-file="$T/vg-$name.log" "$@" >"$T/out-$name" 2>"$T/err-$name"; then
    echo "[valgrind] $name: clean ($((SECONDS - t0)) s): $(grep -E 'ERROR SUMMARY' "$T/vg-$name.log" | sed 's/==[0-9]*== //')"
    grep -E 'total heap usage|definitely lost|indirectly lost|possibly lost|still reachable|All heap blocks' \
      "$T/vg-$name.log" | sed 's/==[0-9]*== */    /' 
  else
    echo "[valgrind] $name: FAILED ($((SECONDS - t0)) s)"
    cat "$T/err-$name" | tail -3
    grep -vE '^==[0-9]+== (Copyright|Using Valgrind|Command|Memcheck|$)' "$T/vg-$name.log" | head -80
    exit 1
  fi
}
step prep -- "$DMS" prep --model "$G" --input "$T/c.jsonl" --output "$T/data" --max-len 32 --quiet
step train -- "$DMS" train --config "$T/run.json"
step export -- "$DMS" export --run "$T/run" --out "$T/exp" --dtype fp32 --shard-size 0.2
step generate-export -- "$DMS" generate --model "$T/exp" --prompt "Hello world" --max-tokens 8 --threads 1
step generate-gguf-tova -- "$DMS" generate --model "$G" --prompt "What is DMS?" --max-tokens 8 --threads 1 \
  --policy tova --budget 8
echo "[valgrind] all runs clean"
