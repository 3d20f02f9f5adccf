# shellcheck shell=bash
# gpu_unpack.sh - sourced by the device scripts (gpu_check.sh,
# gpu_quality.sh): gpu_unpack DIR unpacks .gpupack/pack.tar.xz
# (scripts/gpu_pack.sh) into DIR and points the environment at it: the
# packed libraries, then CUDA's own from the toolkit or the Python wheels
# (nvidia/*/lib), and DMS_SOURCE_REVISION, so that the records name the
# packed build, not the device's copy of the tree. Returns 1 if there is
# no pack to unpack.
gpu_unpack() {
  local P=$1 LP d W
  tar -C "$P" -xJf .gpupack/pack.tar.xz || return 1
  LP=$P/lib
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d "$d" ] && LP=$LP:$d; done
  W=$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]) + "/nvidia")' 2>/dev/null || true)
  [ -n "$W" ] && for d in "$W"/*/lib "$W"/cu*/lib; do [ -d "$d" ] && LP=$LP:$d; done
  export LD_LIBRARY_PATH=$LP${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  DMS_SOURCE_REVISION=$(cat "$P/commit")
  export DMS_SOURCE_REVISION
}
