#!/usr/bin/env bash
# prep.sh - `dms prep` through the real binary ($1) on the embedded model:
# the three JSONL forms become a shard and a prep.json with the right
# counts; shard size, --limit, --skip-bad and --mask-prompt do what they
# say; bad lines and bad flags give one-line errors with FILE:LINE and a
# non-zero exit; --help documents every flag. The shard contents themselves
# (rows, segments, masks) are checked by tests/test_shards.c.
set -u
DMS=$1
. "$(dirname "$0")/lib/harness.sh"
# json_num FILE KEY: the number stored under KEY in prep.json
json_num() { grep -E "\"$2\":" "$1" | head -1 | sed -E 's/.*:[[:space:]]*([0-9]+).*/\1/'; }
expect_json() {
  local name=$1 file=$2 key=$3 want=$4 got
  got=$(json_num "$file" "$key")
  if [ "$got" = "$want" ]; then ok; else bad "$name: $key is '$got', expected '$want'"; fi
}

MODEL=${DMS_DEFAULT_GGUF:-models/default.gguf}
if [ ! -f "$MODEL" ]; then
  echo "FAIL prep: $MODEL missing; run scripts/install_deps.sh"
  echo "0 passed, 1 failed"
  exit 1
fi

cat >"$T/good.jsonl" <<'EOF'
{"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}]}
{"prompt": "Name a colour.", "response": "Blue, like the sky on a clear day."}

{"text": "The quick brown fox jumps over the lazy dog, again and again and again."}
EOF

# --- the three forms ---
expect_ok prep-good -- "$DMS" prep --model "$MODEL" --input "$T/good.jsonl" --output "$T/o1" --max-len 16
P=$T/o1/prep.json
if [ -f "$T/o1/shard-00000.h5" ] && [ -f "$P" ]; then ok; else bad "prep-good: shard-00000.h5 or prep.json missing"; fi
if [ "$(head -c 4 "$T/o1/shard-00000.h5" | tail -c 3)" = "HDF" ]; then ok; else bad "prep-good: shard is not HDF5"; fi
expect_json docs "$P" documents 3
expect_json lines "$P" lines 4
expect_json skipped "$P" skipped_lines 0
expect_json max-len "$P" max_len 16
expect_json shards "$P" shards 1
tokens=$(json_num "$P" tokens)
if [ -n "$tokens" ] && [ "$tokens" -gt 30 ]; then ok; else bad "tokens: '$tokens'"; fi
expect_json rows "$P" rows $(( ${tokens:-0} / 16 ))
if grep -Eq '"tokenizer_hash":[[:space:]]*"0x[0-9a-f]{16}"' "$P"; then ok; else bad "tokenizer_hash missing from prep.json"; fi
if grep -q "\"model\":.*$(basename "$MODEL")" "$P"; then ok; else bad "model missing from prep.json"; fi
if grep -q "documents" "$T/err"; then ok; else bad "prep-good: no summary on stderr"; fi

# --- options ---
expect_ok mask-prompt -- "$DMS" prep --model "$MODEL" --input "$T/good.jsonl" --output "$T/mask" --max-len 16 --mask-prompt
if grep -Eq '"mask_prompt":[[:space:]]*true' "$T/mask/prep.json"; then ok; else bad "mask-prompt not recorded"; fi
expect_ok limit -- "$DMS" prep --model "$MODEL" --input "$T/good.jsonl" --output "$T/limit" --limit 1 --quiet
expect_json limit "$T/limit/prep.json" documents 1
if [ ! -s "$T/err" ]; then ok; else bad "--quiet printed: $(head -c 300 "$T/err")"; fi
expect_ok small-shards -- "$DMS" prep --model "$MODEL" --input "$T/good.jsonl" --input "$T/good.jsonl" --output "$T/many" \
  --max-len 8 --shard-tokens 10
expect_json many-docs "$T/many/prep.json" documents 6
expect_json many-shards "$T/many/prep.json" shards 6
if [ -f "$T/many/shard-00005.h5" ]; then ok; else bad "small-shards: shard-00005.h5 missing"; fi
expect_ok rerun -- "$DMS" prep --model "$MODEL" --input "$T/good.jsonl" --output "$T/many" --max-len 8
if [ -f "$T/many/shard-00000.h5" ] && [ ! -f "$T/many/shard-00001.h5" ]; then ok; else bad "rerun: stale shards left"; fi

# --- bad input: FILE:LINE, one line, non-zero exit ---
printf '{"text": "fine"}\n{"text": 42}\n{"text": "also fine"}\n' >"$T/bad.jsonl"
expect_error bad-type "$T/bad.jsonl:2: 'text' must be a string" -- \
  "$DMS" prep --model "$MODEL" --input "$T/good.jsonl" --input "$T/bad.jsonl" --output "$T/b1"
if [ ! -f "$T/b1/prep.json" ]; then ok; else bad "bad-type: prep.json written after an error"; fi
printf '{"text": "fine"}\n{"text": "cut off\n' >"$T/trunc.jsonl"
expect_error bad-json "$T/trunc.jsonl:2: not valid JSON" -- "$DMS" prep --model "$MODEL" --input "$T/trunc.jsonl" --output "$T/b2"
printf '{"title": "x"}\n' >"$T/nofield.jsonl"
expect_error no-field "$T/nofield.jsonl:1: no 'messages', 'prompt'/'response' or 'text' field" -- \
  "$DMS" prep --model "$MODEL" --input "$T/nofield.jsonl" --output "$T/b3"
printf '{"messages": [{"role": "user", "content": 7}]}\n' >"$T/msg.jsonl"
expect_error bad-message "$T/msg.jsonl:1: messages\[0\]" -- "$DMS" prep --model "$MODEL" --input "$T/msg.jsonl" --output "$T/b4"
expect_ok skip-bad -- "$DMS" prep --model "$MODEL" --input "$T/bad.jsonl" --output "$T/skip" --skip-bad
expect_json skip-docs "$T/skip/prep.json" documents 2
expect_json skip-count "$T/skip/prep.json" skipped_lines 1
printf '{"text": 1}\n' >"$T/allbad.jsonl"
expect_error all-skipped "no documents" -- "$DMS" prep --model "$MODEL" --input "$T/allbad.jsonl" --output "$T/b5" --skip-bad
expect_error missing-input "$T/nope.jsonl: cannot open" -- "$DMS" prep --model "$MODEL" --input "$T/nope.jsonl" --output "$T/b6"
expect_error missing-model "$T/nope.gguf" -- "$DMS" prep --model "$T/nope.gguf" --input "$T/good.jsonl" --output "$T/b7"

# --- command line ---
expect_error no-output "--input and --output are required" -- "$DMS" prep --input "$T/good.jsonl"
expect_error no-input "--input and --output are required" -- "$DMS" prep --output "$T/b8"
expect_error bad-max-len "--max-len 1 to 1048576" -- "$DMS" prep --input "$T/good.jsonl" --output "$T/b8" --max-len 0
expect_error long-max-len "--max-len 1 to 1048576" -- "$DMS" prep --input "$T/good.jsonl" --output "$T/b8" --max-len 1048577
expect_error unknown-flag "unknown flag '--bogus'" -- "$DMS" prep --bogus
expect_ok help -- "$DMS" prep --help
for flag in --model --input --output --max-len --mask-prompt --shard-tokens --limit --skip-bad --quiet; do
  if grep -q -- "$flag" "$T/out"; then ok; else bad "help: $flag undocumented"; fi
done
expect_ok help-top -- "$DMS" --help
if grep -q "prep" "$T/out"; then ok; else bad "dms --help does not list prep"; fi

# --- the quality corpus (scripts/make_demo_corpus.py): GNU manuals without licence text ---
# a fake info manual: one prose node, one quoting the GPL, one permission
# notice (GFDL), one index; only the prose node may reach the corpus, so
# that the held-out GPL-3 of docs/quality.md cannot leak into training.
mkdir -p "$T/info"
prose=$(printf 'The frobnicate command reads each named file and rewrites it in place. %.0s' 1 2 3 4 5 6 7)
{
  printf 'This is fake.info, produced by makeinfo.\n\037\nFile: fake.info,  Node: Intro,  Next: Copying\n\n%s\n' "$prose"
  printf '\037\nFile: fake.info,  Node: Copying\n\n%s GNU General Public License %s\n' "$prose" "$prose"
  printf '\037\nFile: fake.info,  Node: Top\n\n%s under the terms of the GNU Free Documentation License\n' "$prose"
  printf '\037\nFile: fake.info,  Node: Index\n\n%s\n\037\nTag Table:\n' "$prose"
} | gzip >"$T/info/fake.info.gz"
expect_ok corpus-info -- python3 scripts/make_demo_corpus.py "$T/corpus.jsonl" --info-dir "$T/info"
n_prose=$(grep -c "frobnicate command" "$T/corpus.jsonl")
if [ "$n_prose" = 1 ]; then ok; else bad "corpus-info: $n_prose documents of the fake manual, expected only its prose node"; fi
if grep -q -e "General Public" -e "Free Documentation" "$T/corpus.jsonl"; then bad "corpus-info: licence text leaked"; else ok; fi
if [ "$(wc -l <"$T/corpus.jsonl")" -gt 50 ]; then ok; else bad "corpus-info: the Python topics are missing"; fi
expect_error corpus-info-missing "--info-dir needs an existing folder" -- python3 scripts/make_demo_corpus.py "$T/c.jsonl" --info-dir "$T/nope"

# --- --source: stdlib modules as code, about --source-kb kilobytes of them after the topics ---
expect_ok corpus-source -- python3 scripts/make_demo_corpus.py "$T/src.jsonl" --source --source-kb 64
if python3 - "$T/src.jsonl" <<'PY'
import json, sys
docs = [json.loads(l)["text"] for l in open(sys.argv[1])]
code = [d for d in docs if d.startswith("# Module ")]
kb = sum(len(d) for d in code) / 1024
assert len(code) >= 2 and all(("def " in d or "class " in d or "import " in d) for d in code), "source documents are not code"
assert 0.95 * 64 <= kb <= 64 + 70, "%.0f KB of source for --source-kb 64" % kb
assert len(docs) - len(code) > 50, "the Python topics are missing"
assert not any("General Public Licen" in d for d in code), "licence text in the source documents"
PY
then ok; else bad "corpus-source: see above"; fi
expect_error corpus-source-kb "--source-kb needs a positive number" -- python3 scripts/make_demo_corpus.py "$T/c.jsonl" --source --source-kb 0
expect_error corpus-source-kb-alone "--source-kb needs --source" -- python3 scripts/make_demo_corpus.py "$T/c.jsonl" --source-kb 64

# --- --recall: lines holding a digit copied verbatim further on in their document, seeded ---
expect_ok corpus-plain -- python3 scripts/make_demo_corpus.py "$T/plain.jsonl"
expect_ok corpus-recall -- python3 scripts/make_demo_corpus.py "$T/recall.jsonl" --recall 1 --seed 7
expect_ok corpus-recall-again -- python3 scripts/make_demo_corpus.py "$T/recall2.jsonl" --recall 1 --seed 7
if cmp -s "$T/recall.jsonl" "$T/recall2.jsonl"; then ok; else bad "corpus-recall: two runs with one seed differ"; fi
expect_ok corpus-recall-half -- python3 scripts/make_demo_corpus.py "$T/recall3.jsonl" --recall 0.5 --seed 7
if python3 - "$T/plain.jsonl" "$T/recall.jsonl" "$T/recall3.jsonl" <<'PY'
import json, re, sys
load = lambda p: [json.loads(l)["text"] for l in open(p)]
plain, full, half = load(sys.argv[1]), load(sys.argv[2]), load(sys.argv[3])
assert len(plain) == len(full) == len(half), "the documents changed in number"
def copies(a, b):
    """the lines b adds to a; each must repeat an earlier line of a that ends
    1500-4000 characters before the line it follows (that line's own length
    aside: a copy goes after the first line ending that far on)"""
    al, bl, i, out, pos, last = a.split("\n"), b.split("\n"), 0, [], 0, 0
    ends = []
    for x in al:
        ends.append((ends[-1] if ends else 0) + len(x) + 1)
    for line in bl:
        if i < len(al) and line == al[i]:
            pos, last, i = ends[i], len(al[i]) + 1, i + 1
            continue
        assert any(al[k].strip() == line and pos - ends[k] >= 1500 and pos - last - ends[k] < 4000 for k in range(i)), \
            "an added line repeats no line 1500-4000 characters before it: %r" % line
        out.append(line)
    assert i == len(al), "a line of the document was lost"
    return out
nf = nh = 0
for a, b, c in zip(plain, full, half):
    for line in copies(a, b):
        assert re.search(r"\d", line) and 16 <= len(line) <= 160, "copied a line without a digit or of the wrong length: %r" % line
        nf += 1
    nh += len(copies(a, c))
assert nf >= 20, "only %d copies at --recall 1" % nf
assert 0.3 * nf <= nh <= 0.7 * nf, "%d copies at --recall 0.5 against %d at 1" % (nh, nf)
PY
then ok; else bad "corpus-recall: see above"; fi
expect_error corpus-recall-p "--recall needs a probability" -- python3 scripts/make_demo_corpus.py "$T/c.jsonl" --recall 0
expect_error corpus-bad-flag "unrecognized arguments: --bogus" -- python3 scripts/make_demo_corpus.py "$T/c.jsonl" --bogus
if python3 scripts/make_demo_corpus.py --help | grep -q -- "--recall"; then ok; else bad "make_demo_corpus.py --help does not document --recall"; fi

# --- held-out text of the corpus's kind (scripts/make_heldout_text.py): docstrings outside the stdlib ---
# a fake package: two modules with docstrings, one docstring naming a
# licence, a tests/ folder and a lexers/ folder that must be left out, a
# module too short to count; --docs 2 takes both modules, in order.
mkdir -p "$T/site/fakepkg/tests" "$T/site/fakepkg/lexers"
doc=$(printf 'Frobnicates every widget of the given list and returns the count of widgets changed. %.0s' 1 2 3)
for m in alpha beta; do
  printf '"""Module %s: %s"""\n\ndef run():\n    """%s"""\n\nclass Lic:\n    """Released under the MIT License; %s"""\n' "$m" "$doc" "$doc" "$doc" >"$T/site/fakepkg/$m.py"
done
printf '"""%s"""\n' "$doc$doc" >"$T/site/fakepkg/tests/test_x.py"
printf '"""%s"""\n' "$doc$doc" >"$T/site/fakepkg/lexers/lx.py"
printf '"""short"""\n' >"$T/site/fakepkg/gamma.py"
expect_ok heldout -- python3 scripts/make_heldout_text.py "$T/ho.txt" --root "$T/site" --packages fakepkg --docs 2
if python3 - "$T/ho.txt" <<'PY'
import sys
t = open(sys.argv[1]).read()
assert t.startswith("Module fakepkg.alpha\n\nModule alpha:"), t[:60]
assert "Module fakepkg.beta\n\nModule beta:" in t, "second module missing"
assert t.count("def run:") == 2, "function docstrings missing"
assert "License" not in t and "class Lic" not in t, "a licence docstring leaked"
assert "tests" not in t and "lexers" not in t and "gamma" not in t, "a left-out module leaked"
PY
then ok; else bad "heldout: see above"; fi
expect_error heldout-docs "fewer than --docs 3" -- python3 scripts/make_heldout_text.py "$T/h.txt" --root "$T/site" --packages fakepkg --docs 3
expect_error heldout-pkg "no such package folder" -- python3 scripts/make_heldout_text.py "$T/h.txt" --root "$T/site" --packages nopkg
expect_error heldout-opt "unknown option --nope" -- python3 scripts/make_heldout_text.py "$T/h.txt" --nope

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
