#!/usr/bin/env bash
# fuzz.sh [SECONDS] [TARGET...] - builds the libFuzzer targets of fuzz/
# into build-fuzz/ (clang, -fsanitize=fuzzer,address,undefined; CMake
# option DMS_FUZZ) and runs each target (all of fuzz/targets.cmake, or the
# ones named) for SECONDS (default 20), one at a time, at nice 19, on its
# working corpus build-fuzz/corpus/<target>/ (the committed seeds of
# fuzz/corpus/<target>/ plus whatever earlier runs found). Prints each
# target's executions, exec/s and coverage (libFuzzer's cov/ft), the CPU
# seconds it really got (at nice 19 on a busy machine far fewer than the
# wall-clock SECONDS), and a table at the end (also in
# build-fuzz/fuzz-results.tsv). Fails if any
# target crashes, hits a sanitizer report, leaks, takes over 60 s on one
# input or runs out of memory; the input is kept in build-fuzz/crashes/<target>/
# and goes, once the parser is fixed, to tests/fixtures/fuzz_regressions/
# (docs/fuzzing.md).
#   bash scripts/fuzz.sh --seeds   regenerates fuzz/corpus/ (fuzz/make_corpus.c)
#   FUZZ_NO_BUILD=1                runs the targets already built in build-fuzz/
set -euo pipefail
cd "$(dirname "$0")/.."
B=build-fuzz

build() {
  [ -n "${FUZZ_NO_BUILD:-}" ] && return 0
  if ! command -v clang >/dev/null; then
    echo "fuzz.sh: clang not found (Debian: apt-get install clang libclang-rt-dev, see scripts/install_deps.sh)" >&2
    exit 2
  fi
  nice -n 19 cmake -S . -B "$B" -DCMAKE_C_COMPILER=clang -DDMS_FUZZ=ON -DDMS_CUDA=OFF -DDMS_MPI=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  nice -n 19 cmake --build "$B" --target dms_fuzz -j"${FUZZ_BUILD_JOBS:-1}" >/dev/null
}

if [ "${1:-}" = "--seeds" ]; then
  build
  rm -rf fuzz/corpus
  TMPDIR=$(mktemp -d) "$B/fuzz/fuzz_make_corpus" fuzz/corpus
  du -sh fuzz/corpus
  exit 0
fi

secs=${1:-20}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  read -r -a targets <<<"$(sed -n '/^set(DMS_FUZZ_TARGETS/,/)/p' fuzz/targets.cmake | tr '()\n' '   ' |
    sed 's/set *DMS_FUZZ_TARGETS//')"
fi
build

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
results="$B/fuzz-results.tsv"
printf 'target\tseconds\tcpu_s\texecs\texec_per_s\tcov\tft\tcorpus\tresult\n' >"$results"
# user + system seconds of every child so far: the second line of bash's
# `times`, which must run in this shell (in $(...) or a pipe it would count
# the children of that subshell only), written to a file and read back
cpu_of() { awk 'NR == 2 { split($1, u, "m"); split($2, s, "m"); printf "%.1f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$1"; }
failed=0
for t in "${targets[@]}"; do
  exe="$B/fuzz/fuzz_$t"
  [ -x "$exe" ] || { echo "fuzz.sh: no target '$t'" >&2; exit 2; }
  mkdir -p "$B/corpus/$t" "$B/crashes/$t" "$B/logs"
  cp -n fuzz/corpus/"$t"/* "$B/corpus/$t/" 2>/dev/null || true
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/dms-fuzz-run-XXXXXX")
  log="$B/logs/$t.log"
  echo "[fuzz] $t: ${secs}s"
  rc=0
  times >"$B/logs/.times0"
  TMPDIR="$tmp" nice -n 19 "$exe" "$B/corpus/$t" -max_total_time="$secs" -print_final_stats=1 \
    -timeout=60 -rss_limit_mb=2048 -artifact_prefix="$B/crashes/$t/" >"$log" 2>&1 || rc=$?
  times >"$B/logs/.times1"
  cpu=$(awk -v a="$(cpu_of "$B/logs/.times0")" -v b="$(cpu_of "$B/logs/.times1")" 'BEGIN { printf "%.1f", b - a }')
  rm -rf "$tmp"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
  if [ $rc -eq 0 ]; then res=ok; else
    res="FAILED (rc $rc)"
    failed=1
    grep -E 'ERROR: |runtime error|fuzz: |SUMMARY|Test unit written' "$log" | head -8 | sed 's/^/    /'
  fi
  echo "  $t: ${execs:-?} execs, ${eps:-?} exec/s, ${cpu} s CPU, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}: $res" \
    "(log $log)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$secs" "$cpu" "${execs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" \
    "${corp:-?}" "$res" >>"$results"
done
echo
column -t -s $'\t' "$results"
exit $failed
