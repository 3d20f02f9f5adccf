#!/usr/bin/env bash
# demo.sh - the main job on a fresh machine: install dependencies and the
# embedded model, build, prepare the demo corpus, retrofit the model with DMS
# on the CPU (configs/demo.json), plot the run, export the self-compressing
# checkpoint, and generate from it with DMS eviction and its KV statistics,
# then with the plain cache for comparison. Re-running starts afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
./build/dms inspect models/default.gguf
mkdir -p checkpoints/demo
python3 scripts/make_demo_corpus.py checkpoints/demo/corpus.jsonl
./build/dms prep --model models/default.gguf --input checkpoints/demo/corpus.jsonl \
  --output checkpoints/demo/data --max-len "$(python3 -c 'import json;print(json.load(open("configs/demo.json"))["max_len"])')"
rm -rf checkpoints/demo/run
./build/dms train --config configs/demo.json
./build/dms inspect checkpoints/demo/run
./build/dms export --run checkpoints/demo/run --out checkpoints/demo/export --force
prompt="Explain in three sentences why the KV cache limits long reasoning."
echo "[demo] the retrofit, with DMS eviction (policy dms):"
./build/dms generate --model checkpoints/demo/export --max-tokens 96 --prompt "$prompt"
echo "[demo] the same export with the plain cache (policy full), for comparison:"
./build/dms generate --model checkpoints/demo/export --max-tokens 96 --policy full --quiet --prompt "$prompt"
