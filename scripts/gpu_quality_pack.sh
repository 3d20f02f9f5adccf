#!/usr/bin/env bash
# gpu_quality_pack.sh - prepares .gq1/ and .gq2/ (ignored) for the quality
# run on the device (scripts/gpu_quality.sh; docs/quality.md, "On a GPU").
# The embedded model (98 MB) is larger than one device call may carry
# (64 MiB, the repository included), so it travels xz-compressed in two
# parts over two calls back to back: .gq1/ with .gpupack/ in the first
# call (gpu_check.sh's tests, say), .gq2/ with the training rows in the
# second, which runs gpu_quality.sh. A warm machine keeps what an earlier
# call carried (for 30 s after a call). Part 1 is sized so that the first
# call fits beside the repository and .gpupack/ (run gpu_pack.sh first).
# DATA: the prepared rows (dms prep) to carry; default the GNU-manual corpus,
# the largest (1.7M tokens: a few epochs at the GPU recipe's tokens).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-checkpoints/quality/data1024info}
LIMIT=$((64 * 1024 * 1024))
MARGIN=$((2 * 1024 * 1024)) # the repository grows between packing and the call
[ -f models/default.gguf ] || { echo "gpu_quality_pack: models/default.gguf missing (bash scripts/install_deps.sh)" >&2; exit 1; }
[ -f "$DATA/prep.json" ] || { echo "gpu_quality_pack: $DATA: no prep.json (dms prep first; docs/quality.md)" >&2; exit 1; }
[ -f .gpupack/pack.tar.xz ] || { echo "gpu_quality_pack: .gpupack/pack.tar.xz missing (bash scripts/gpu_pack.sh)" >&2; exit 1; }
bytes() { stat -L -c %s "$@" | awk '{ s += $1 } END { print s + 0 }'; }
repo=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
pack=$(bytes .gpupack/pack.tar.xz)
rm -rf .gq1 .gq2
mkdir -p .gq1 .gq2
Z=$(mktemp)
trap 'rm -f "$Z"' EXIT
xz -T0 -6 -c models/default.gguf >"$Z"
total=$(bytes "$Z")
part1=$((LIMIT - MARGIN - repo - pack))
[ "$part1" -gt 0 ] || { echo "gpu_quality_pack: no room beside the repository ($repo B) and .gpupack ($pack B)" >&2; exit 1; }
head -c "$part1" "$Z" >.gq1/model.gguf.xz.1
tail -c +$((part1 + 1)) "$Z" >.gq2/model.gguf.xz.2
sha256sum <models/default.gguf | cut -d' ' -f1 >.gq2/model.sha256
(cd "$DATA" && tar -cJf - prep.json shard-*.h5) >.gq2/data.tar.xz # token ids: a fifth when compressed
call1=$((repo + pack + $(bytes .gq1/*)))
call2=$((repo + $(bytes .gq2/*)))
[ "$call2" -le $((LIMIT - MARGIN)) ] ||
  { echo "gpu_quality_pack: the second call would carry $call2 B, over 64 MiB less the margin" >&2; exit 1; }
echo "gpu_quality_pack: model $(bytes models/default.gguf) B -> xz $total B in two parts;" \
  "call 1 (repository + .gpupack + .gq1) $((call1 >> 20)) MiB, call 2 (repository + .gq2) $((call2 >> 20)) MiB of 64"
