#!/usr/bin/env bash
# demo.sh - the main job on a fresh machine: install dependencies and the
# embedded model, build, prepare the demo corpus, retrofit the model with DMS
# on the CPU (configs/demo.json), plot the run, and generate with the base
# model's KV statistics. Re-running starts the retrofit afresh.
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
./build/dms generate --model models/default.gguf --max-tokens 96 \
  --prompt "Explain in three sentences why the KV cache limits long reasoning."
