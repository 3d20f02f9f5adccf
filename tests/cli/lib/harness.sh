# harness.sh - sourced by the CLI test scripts (tests/cli/*.sh): a scratch
# folder removed on exit, pass/fail counters, and the two expectations
# every script uses. The script ends with: echo "$pass passed, $fail failed".
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

# expect_error NAME PATTERN -- command...: non-zero exit (not a signal), one
# stderr line, matching PATTERN (extended regex).
expect_error() {
  local name=$1 pattern=$2; shift 3
  "$@" >"$T/out" 2>"$T/err"
  local rc=$? lines
  lines=$(wc -l <"$T/err")
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && [ "$lines" -eq 1 ] && grep -Eq -- "$pattern" "$T/err"; then ok
  else bad "$name: rc=$rc lines=$lines stderr: $(head -c 600 "$T/err")"; fi
}
# expect_ok NAME -- command...: exit 0
expect_ok() {
  local name=$1; shift 2
  if "$@" >"$T/out" 2>"$T/err"; then ok; else bad "$name: rc=$? $(head -c 800 "$T/err")"; fi
}
