#!/usr/bin/env bash
# peer_pack.sh MIRROR - prepares .peer/ (git-ignored, never committed) for
# bench/nvidia_peer.py, the peer of `dms bench train` (docs/gpu.md): NVIDIA
# Model-Optimizer's experimental/dms sources (Apache-2.0) copied from a git
# mirror of NVIDIA/Model-Optimizer (MIRROR: a bare or normal clone; in a
# session, the fetch tool's /work/.mirror/NVIDIA+Model-Optimizer/repo), and
# the wheels their code needs that the GPU image lacks (transformers 4.57.3,
# their pin, with the huggingface_hub and tokenizers it accepts), from PyPI.
# About 16 MB; carried to the device beside .gpupack/.
set -euo pipefail
cd "$(dirname "$0")/.."
M=${1:?usage: scripts/peer_pack.sh MIRROR (a clone of NVIDIA/Model-Optimizer)}
commit=$(git -C "$M" rev-parse HEAD)
rm -rf .peer
mkdir -p .peer/nvidia_dms .peer/wheels
# the Python packages, configs and licence; tests, scripts and notebooks left out
git -C "$M" archive "$commit" experimental/dms | tar -x -C .peer/nvidia_dms --strip-components=2 \
  --exclude='experimental/dms/tests' --exclude='experimental/dms/scripts' --exclude='*.ipynb'
[ -f .peer/nvidia_dms/LICENSE ] || git -C "$M" show "$commit:LICENSE" >.peer/nvidia_dms/LICENSE
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --dest .peer/wheels \
  transformers==4.57.3 huggingface_hub==0.36.0 tokenizers==0.22.1
cat >.peer/README <<TXT
.peer/ -- carried to the GPU machine for bench/nvidia_peer.py; git-ignored, never committed.
nvidia_dms/  NVIDIA Model-Optimizer experimental/dms (Apache-2.0), source: NVIDIA/Model-Optimizer
             (GitHub) commit: $commit
wheels/      transformers 4.57.3 (their pin; their modeling code fails on the image's 5.x),
             huggingface_hub 0.36.0 and tokenizers 0.22.1 (the versions 4.57.3 accepts).
Made by scripts/peer_pack.sh on $(date -u +%F).
TXT
echo "peer_pack: .peer/ $(du -sh .peer | cut -f1) from NVIDIA/Model-Optimizer $commit"
