#!/usr/bin/env bash
# eval.sh - `dms eval` through the real binary ($1) on the embedded model
# (models/default.gguf, or $DMS_DEFAULT_GGUF), with small synthetic
# fixtures in the benchmarks' formats written here: aime, gpqa, niah and kl
# runs write the result JSON with the fields the docs promise; --limit
# stops a run early, a rerun resumes and skips the finished items (also
# after a kill left half a line); --match turns a DMS kl result into a
# baseline budget; bad input gives one-line errors naming the file (and
# line and field) with a non-zero exit; --summary prints the table and
# `dms inspect DIR` plots it. Runs are kept to a few short items.
set -u
DMS=$1
. "$(dirname "$0")/lib/harness.sh"
# has FILE PATTERN NAME: the (extended) pattern occurs in the file
has() { if grep -Eq -- "$2" "$1"; then ok; else bad "$3: '$2' not in $1"; fi; }
# json_num FILE KEY: the first number stored under KEY (cJSON's pretty print)
json_num() { grep -E "\"$2\":" "$1" | head -1 | sed -E 's/.*:[[:space:]]*(-?[0-9.eE+-]+).*/\1/'; }
lines() { wc -l <"$1" | tr -d ' '; }

MODEL=${DMS_DEFAULT_GGUF:-models/default.gguf}
if [ ! -f "$MODEL" ]; then
  echo "FAIL eval: $MODEL missing; run scripts/install_deps.sh"
  echo "0 passed, 1 failed"
  exit 1
fi
# one thread: on a shared machine an OpenMP thread that loses its core makes
# every parallel region of this small model wait (10x slower at 2 threads)
E=("$DMS" eval --model "$MODEL" --threads 1 --quiet)

# ---- fixtures in the benchmarks' formats ----
cat >"$T/aime.jsonl" <<'EOF'
{"problem": "What is 2 + 3? Put the final answer in \\boxed{}.", "answer": "5"}
{"problem": "What is 10 times 4? Put the final answer in \\boxed{}.", "answer": 40}
{"question": "What is 7 + 8? Put the final answer in \\boxed{}.", "answer": "015"}
EOF
cat >"$T/gpqa.jsonl" <<'EOF'
{"Question": "Which planet is closest to the Sun?", "Correct Answer": "Mercury", "Incorrect Answer 1": "Venus", "Incorrect Answer 2": "Earth", "Incorrect Answer 3": "Mars"}
{"Question": "What is the chemical formula of water?", "Correct Answer": " H2O\n", "Incorrect Answer 1": "CO2", "Incorrect Answer 2": "NaCl", "Incorrect Answer 3": "O2"}
EOF
# held-out text (JSONL with "text"): two documents of varied sentences, > 512 tokens
words=(river garden lantern harbour meadow castle orchard valley bridge forest)
doc() {
  local s="" i
  for i in $(seq 1 45); do
    s+="On day $((i * $1)) the ${words[$((i % 10))]} near the ${words[$(((i * 3 + $1) % 10))]} was quiet, and the keeper wrote $((i * 7 + $1)) lines about it. "
  done
  printf '%s' "$s"
}
printf '{"text": "%s"}\n{"text": "%s"}\n' "$(doc 1)" "$(doc 2)" >"$T/text.jsonl"
# a DMS kl result as dms eval writes it (only what --match reads): 112.125 live
# tokens per head over windows of 512 is what a budget of 128 holds
cat >"$T/dms_kl.json" <<'EOF'
{"task": "kl", "policy": "dms", "metric": {"name": "kl", "value": 0.01, "se": 0.001},
 "config": {"window_tokens": 512}, "kv": {"kv_cr": 2.29, "held_avg": 112.125}}
EOF

# ---- bad input: one line, non-zero exit, before any model is loaded ----
printf '{"problem": "ok", "answer": "1"}\n{"problem": oops}\n' >"$T/bad.jsonl"
printf '{"problem": "no answer here"}\n' >"$T/noanswer.jsonl"
printf '{"problem": "p", "answer": "x"}\n' >"$T/notint.jsonl"
printf '{"Question": "q", "Correct Answer": "a", "Incorrect Answer 1": "b", "Incorrect Answer 2": "c"}\n' >"$T/gpqa_bad.jsonl"
expect_error no-task "--task is required" -- "${E[@]}" --policy full
expect_error unknown-task "unknown task 'frob'" -- "${E[@]}" --task frob --policy full
expect_error no-policy "--policy is required" -- "${E[@]}" --task niah
expect_error unknown-policy "unknown policy 'lru'" -- "${E[@]}" --task niah --policy lru
expect_error cr-below-1 "--cr must be at least 1 \\(got 0.5\\)" -- "${E[@]}" --task niah --policy window --cr 0.5
expect_error budget-dms "--budget does not apply to policy dms" -- "${E[@]}" --task niah --policy dms --budget 64
expect_error offset-not-dms "--dms-offset applies to policy dms only" -- \
  "${E[@]}" --task niah --policy h2o --budget 64 --dms-offset 4
expect_error cr-full "--cr does not apply to policy full" -- "${E[@]}" --task niah --policy full --cr 2
expect_error no-budget "policy tova needs exactly one of --budget N, --cr X, --match" -- "${E[@]}" --task niah --policy tova
expect_error two-budgets "needs exactly one of" -- "${E[@]}" --task niah --policy h2o --budget 8 --cr 2
expect_error match-not-kl "--match applies to --task kl only" -- "${E[@]}" --task niah --policy window --match "$T/dms_kl.json"
expect_error no-data "--task aime needs --data FILE" -- "${E[@]}" --task aime --policy full
expect_error niah-data "makes its own haystacks" -- "${E[@]}" --task niah --policy full --data "$T/aime.jsonl"
expect_error short-window "--window-tokens must be at least 512" -- "${E[@]}" --task kl --policy full --data "$T/text.jsonl" --window-tokens 128
expect_error bad-lengths "--lengths expects comma-separated" -- "${E[@]}" --task niah --policy full --lengths 128,abc
expect_error bad-number "--budget expects an integer" -- "${E[@]}" --task niah --policy window --budget x
expect_error missing-data "$T/nope.jsonl: cannot open" -- "${E[@]}" --task aime --policy full --data "$T/nope.jsonl"
expect_error bad-json "$T/bad.jsonl:2: not valid JSON" -- "${E[@]}" --task aime --policy full --data "$T/bad.jsonl"
expect_error missing-field "$T/noanswer.jsonl:1: missing field 'answer'" -- "${E[@]}" --task aime --policy full --data "$T/noanswer.jsonl"
expect_error not-int "$T/notint.jsonl:1: answer 'x' is not an integer" -- "${E[@]}" --task aime --policy full --data "$T/notint.jsonl"
expect_error gpqa-field "$T/gpqa_bad.jsonl:1: missing field 'Incorrect Answer 3'" -- "${E[@]}" --task gpqa --policy full --data "$T/gpqa_bad.jsonl"
expect_error kl-text-field "$T/aime.jsonl:1: missing field 'text'" -- "${E[@]}" --task kl --policy full --data "$T/aime.jsonl"
expect_error match-not-result "$T/aime.jsonl: not a kl result" -- "${E[@]}" --task kl --policy window --data "$T/text.jsonl" --match "$T/aime.jsonl"
expect_error missing-model "$T/none.gguf.*cannot open" -- "$DMS" eval --model "$T/none.gguf" --task niah --policy full --quiet
mkdir -p "$T/empty"
expect_error summary-empty "$T/empty: no eval results" -- "$DMS" eval --summary "$T/empty"
expect_ok help -- "$DMS" eval --help
has "$T/out" "--match RESULT.json" help-match
has "$T/out" "examples:" help-examples
has "$T/out" "--window-tokens" help-window

# ---- aime: --limit stops after 2 items, a rerun resumes ----
OUT=$T/runs
expect_ok aime-limit -- "${E[@]}" --task aime --data "$T/aime.jsonl" --policy full --samples 2 --max-tokens 8 \
  --batch 4 --limit 2 --out "$OUT" --tag t
J=$OUT/aime-full-t.json L=$OUT/aime-full-t.jsonl
has "$T/out" "^partial: .*aime-full-t.json \\(2 of 6 items; 2 now, 0 from before\\)" aime-partial-line
[ "$(lines "$L")" = 2 ] && ok || bad "aime-limit: $(lines "$L") lines in the JSONL, expected 2"
has "$J" '"complete":[[:space:]]*false' aime-incomplete
printf '{"key": "p2-s1", "fingerp' >>"$L" # a kill in the middle of a line
expect_ok aime-resume -- "${E[@]}" --task aime --data "$T/aime.jsonl" --policy full --samples 2 --max-tokens 8 \
  --batch 4 --out "$OUT" --tag t
has "$T/out" "written .*\\(6 of 6 items; 4 now, 2 from before\\)" aime-resume-line
[ "$(lines "$L")" = 6 ] && ok || bad "aime-resume: $(lines "$L") lines, expected 6"
dups=$(grep -o '"key":"[^"]*"' "$L" | sort | uniq -d)
[ -z "$dups" ] && ok || bad "aime-resume: items run twice: $dups"
has "$J" '"complete":[[:space:]]*true' aime-complete
for f in '"name":[[:space:]]*"pass@1"' '"se":' '"git_commit":' '"kv_cr":' '"kv_cr_end":' '"decision_cr":' \
  '"held_peak":' '"held_mean":' '"reads_per_token":' '"tok_s":' '"out_of_tokens":[[:space:]]*[0-9]' \
  '"temperature":[[:space:]]*0.6' '"top_k":[[:space:]]*20' '"top_p":[[:space:]]*0.9' '"max_tokens":[[:space:]]*8' \
  '"items":' '"gold":[[:space:]]*15' '"budget_rule":[[:space:]]*"none"'; do
  has "$J" "$f" "aime-json"
done
has "$L" '"completion":' aime-jsonl-completion
# the revision is the source tree's at build time (cmake/git_rev.cmake), not
# a stale one from when the build folder was configured
rev=$(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo unknown)
has "$J" "\"git_commit\":[[:space:]]*\"$rev(-dirty)?\"" aime-json-revision
# every sample ran out of its 8 tokens or stopped; pass@1 is a mean in [0, 1]
p=$(json_num "$J" value)
awk -v p="$p" 'BEGIN { exit !(p >= 0 && p <= 1) }' && ok || bad "aime: pass@1 '$p'"
expect_error aime-other-config "another configuration" -- "${E[@]}" --task aime --data "$T/aime.jsonl" --policy full \
  --samples 2 --max-tokens 9 --out "$OUT" --tag t
expect_ok aime-window -- "${E[@]}" --task aime --data "$T/aime.jsonl" --policy window --budget 32 --samples 1 \
  --max-tokens 8 --out "$OUT"
has "$T/out" "aime window \\(budget 32\\)" aime-window-line
has "$OUT/aime-window-default-b32.json" '"budget":[[:space:]]*32' aime-window-budget

# ---- gpqa: shuffled letters, the correct one recorded ----
expect_ok gpqa -- "${E[@]}" --task gpqa --data "$T/gpqa.jsonl" --policy sinks --cr 2 --max-tokens 6 --out "$OUT"
G=$OUT/gpqa-sinks-default-cr2.json
has "$G" '"name":[[:space:]]*"accuracy"' gpqa-metric
has "$G" '"gold":[[:space:]]*"[ABCD]"' gpqa-gold
has "$G" '"order":' gpqa-order
has "$G" '"budget_rule":[[:space:]]*"cr"' gpqa-cr

# ---- niah: synthetic haystacks, accuracy per (length, depth) ----
expect_ok niah -- "${E[@]}" --task niah --policy h2o --budget 64 --lengths 128,100000 --depths 0,100 --samples 1 \
  --max-tokens 10 --out "$OUT"
N=$OUT/niah-h2o-default-b64.json
has "$N" '"cells":' niah-cells
has "$N" '"depth":[[:space:]]*100' niah-depth
has "$N" '"skipped_lengths":' niah-capped   # 100000 tokens exceed the context
has "$OUT/niah-h2o-default-b64.jsonl" '"code":"[0-9]{6}"' niah-code
[ "$(lines "$OUT/niah-h2o-default-b64.jsonl")" = 2 ] && ok || bad "niah: expected 2 items"

# ---- kl: --match sets the budget whose time average equals the DMS run's ----
expect_ok kl-match -- "${E[@]}" --task kl --data "$T/text.jsonl" --policy window --match "$T/dms_kl.json" \
  --windows 1 --out "$OUT"
K=$OUT/kl-window-default-match.json
has "$K" '"budget":[[:space:]]*128' kl-match-budget
has "$K" '"budget_rule":[[:space:]]*"match"' kl-match-rule
has "$K" '"budget_held_avg":[[:space:]]*112.125' kl-match-held
has "$K" '"held_avg":[[:space:]]*112.125' kl-held-exact
has "$K" '"ppl":' kl-ppl
has "$K" '"ref_ppl":' kl-ref-ppl
has "$K" '"vanilla":[[:space:]]*"the model under policy full"' kl-vanilla
kl=$(json_num "$K" kl)
awk -v k="$kl" 'BEGIN { exit !(k > 0) }' && ok || bad "kl: window 128 over 512 tokens gave KL '$kl'"

# ---- kl --by-lane: each lane matched to its own DMS time average (h2o here) ----
# (the embedded model has 30 x 3 lanes: half held 35 tokens on average, half 200)
avgs=$(for i in $(seq 1 90); do if [ "$i" -le 45 ]; then printf '35,'; else printf '200,'; fi; done)
cat >"$T/dms_lanes.json" <<EOF
{"task": "kl", "policy": "dms", "metric": {"name": "kl", "value": 0.01, "se": 0.001},
 "config": {"window_tokens": 512}, "kv": {"kv_cr": 2.18, "held_avg": 117.5},
 "items": [{"key": "w0", "lane_held_avg": [${avgs%,}]}]}
EOF
expect_error by-lane-no-match "--by-lane needs --match RESULT.json" -- \
  "${E[@]}" --task kl --data "$T/text.jsonl" --policy h2o --budget 64 --by-lane
expect_error by-lane-no-lanes "$T/dms_kl.json: no items with lane_held_avg" -- \
  "${E[@]}" --task kl --data "$T/text.jsonl" --policy h2o --match "$T/dms_kl.json" --by-lane
expect_ok kl-by-lane -- "${E[@]}" --task kl --data "$T/text.jsonl" --policy h2o --match "$T/dms_lanes.json" --by-lane \
  --windows 1 --out "$OUT"
K=$OUT/kl-h2o-default-match-lanes.json
has "$K" '"budget_rule":[[:space:]]*"match-lanes"' by-lane-rule
python3 - "$K" <<'PY' && ok || bad "kl --by-lane: lane budgets do not hold each lane's DMS time average ($K)"
import json, sys
d = json.load(open(sys.argv[1]))
b, T = d["match"]["lane_budgets"], 512
H = lambda B: B * (2 * T - B + 1) / (2 * T)
assert len(b) == 90 and len(set(b[:45])) == 1 and len(set(b[45:])) == 1, b
assert abs(H(b[0]) - 35) < 1 and abs(H(b[45]) - 200) < 1, b   # each lane its own DMS average
held = d["kv"]["held_avg"]   # measured: what the lane budgets really held
assert abs(held - (H(b[0]) + H(b[45])) / 2) < 1e-6 * held and abs(d["match"]["budget_held_avg"] - held) < 1e-6 * held
lanes = d["items"][0]["lane_held_avg"]
assert abs(lanes[0] - H(b[0])) < 1e-3 and abs(lanes[89] - H(b[45])) < 1e-3, lanes[:2]  # stored to 3 decimals
PY

# ---- the table and the plots ----
expect_ok summary -- "$DMS" eval --summary "$OUT"
for row in "^aime .*full .*pass@1" "^aime .*window .*32 " "^gpqa .*sinks .*cr 2" "^niah .*h2o .*64 .*accuracy" \
  "^kl .*window .*128 \\(match\\).*kl " "^kl .*h2o .*lanes \\(match\\)"; do
  has "$T/out" "$row" summary-row
done
if command -v gnuplot >/dev/null; then
  expect_ok inspect -- "$DMS" inspect "$OUT"
  for t in aime gpqa niah kl; do
    [ -s "$OUT/plots/$t.png" ] && ok || bad "inspect: $OUT/plots/$t.png missing"
  done
  has "$OUT/plots/aime.dat" "# window" inspect-line-per-policy
  # with_copies DIR KEY VALUE: DIR holds the window KL results and a copy
  # of each with the string KEY set to VALUE
  with_copies() {
    mkdir -p "$1"
    cp "$OUT"/kl-window-*.json "$1/"
    for f in "$OUT"/kl-window-*.json; do
      sed -E "s|\"$2\":[[:space:]]*\"[^\"]*\"|\"$2\": \"$3\"|" "$f" >"$1/other-$(basename "$f")"
    done
  }
  # results of a second model (another checkpoint of the same retrofit) join
  # the same policy lines instead of making a line per model
  M2=$T/two_models
  with_copies "$M2" model other-checkpoint
  expect_ok inspect-two-models -- "$DMS" inspect "$M2"
  has "$T/out" "kl.png \\([0-9]+ results from 2 model\\(s\\), 1 lines\\)" inspect-two-models-one-line
  [ "$(grep -c '^# ' "$M2/plots/kl.dat")" = 1 ] && ok || bad "inspect: expected one line in $M2/plots/kl.dat"
  # the same policy measured on a second text makes a line of its own, named by the text
  M3=$T/two_texts
  with_copies "$M3" data /texts/other_text.txt
  expect_ok inspect-two-texts -- "$DMS" inspect "$M3"
  has "$T/out" "kl.png \\([0-9]+ results from 1 model\\(s\\), 2 lines\\)" inspect-two-texts-two-lines
  has "$M3/plots/kl.dat" "^# window, other_text.txt$" inspect-line-per-text
  has "$M3/plots/kl.dat" "^# window, text.jsonl$" inspect-line-per-text
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
