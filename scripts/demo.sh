#!/usr/bin/env bash
# demo.sh - the main job on a fresh machine: install dependencies and the
# embedded model, build, show the model, and generate with KV statistics.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
./build/dms inspect models/default.gguf
./build/dms generate --model models/default.gguf --max-tokens 96 \
  --prompt "Explain in three sentences why the KV cache limits long reasoning."
