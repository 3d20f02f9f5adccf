#!/usr/bin/env bash
# bench_train.sh - `dms bench train` through the real binary ($1): the
# refusals (one stderr line, exit 2); a short CPU run on one layer of
# Qwen3-0.6B at its real width (bench/models/qwen3_0.6b, random weights):
# the JSON holds the shape, the step times, tokens/s from the median, every
# phase, and model FLOPs equal to the formula of docs/training.md worked out
# here from config.json, the KD chunk (the CPU's default); --peak-tflops
# gives the MFU. `dms bench attention`:
# its refusals, and a short CPU run whose JSON holds the shape, the causal
# pairs of its documents and the FLOPs of the formula it states, and the
# revision DMS_SOURCE_REVISION names. bench/gpu_summary.py on the committed
# H100 records.
set -u
DMS=$1
. "$(dirname "$0")/lib/harness.sh"

expect_error "few tokens" "tokens must be at least 16" -- "$DMS" bench train --tokens 8
expect_error "docs" "docs must be between" -- "$DMS" bench train --tokens 64 --docs 65
expect_error "shape" "--shape nosuch: no .*bench/models/nosuch" -- "$DMS" bench train --shape nosuch
expect_error "shape and model" "not both" -- "$DMS" bench train --shape qwen3-8b --model x
expect_error "backend" "backend" -- "$DMS" bench train --shape qwen3-0.6b --layers 1 --tokens 32 --backend tpu
expect_error "kd chunk" "kd-chunk must be >= 0" -- "$DMS" bench train --shape qwen3-0.6b --kd-chunk -1
"$DMS" bench --help 2>&1 | grep -q -- "--peak-tflops" && ok || bad "bench help does not document --peak-tflops"

if "$DMS" bench train --shape qwen3-0.6b --layers 1 --tokens 64 --docs 2 --steps 3 --threads 1 \
    --peak-tflops 2 --out "$T/res" >"$T/out" 2>"$T/err"; then ok; else bad "bench run: rc=$? $(head -c 600 "$T/err")"; fi
grep -q "^step .* tokens/s, .* MFU " "$T/out" && ok || bad "no summary line: $(cat "$T/out")"
J=$(ls "$T"/res/train-qwen3_0.6b-64-cpu-*.json 2>/dev/null | head -1)
if [ -n "$J" ] && python3 - "$J" bench/models/qwen3_0.6b/config.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
c = json.load(open(sys.argv[2]))
assert d["layers"] == 1 and d["tokens"] == 64 and d["docs"] == 2 and d["backend"] == "cpu", d
assert d["kd_chunk"] == 128, d  # the CPU's default (1024 on a GPU)
assert d["steps_timed"] == 3 and 0 < d["step_s_min"] <= d["step_s_median"] <= d["step_s_max"], d
assert abs(d["tokens_per_s"] - 64 / d["step_s_median"]) < 1e-6 * d["tokens_per_s"]
ph = d["phase_s_mean"]
assert set(ph) == {"setup", "teacher", "student", "kd", "backward", "optimizer"}, ph
assert all(v >= 0 for v in ph.values()) and ph["teacher"] > 0 and ph["backward"] > 0
# the phases tile the step: their sum is within the spread of the steps
assert d["step_s_min"] * 0.9 <= sum(ph.values()) <= d["step_s_max"] * 1.1, (ph, d)
# model FLOPs, from the published shapes: teacher + student forward, input-gradient backward
dm, H, KV, hd = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
ff, V, L, T = c["intermediate_size"], c["vocab_size"], 1, 64
pairs = 2 * (32 * 33 // 2)
lin = 2 * T * L * (dm * H * hd * 2 + 2 * dm * KV * hd + 3 * dm * ff)
head = 2 * T * V * dm
att = 4 * pairs * H * hd * L
f = d["model_flops"]
assert f["causal_pairs"] == pairs and f["linear_pass"] == lin and f["lm_head_pass"] == head, f
assert f["attention_forward"] == att and f["step_total"] == 3 * (lin + head) + 4 * att, f
assert abs(d["achieved_tflops"] - f["step_total"] / d["step_s_median"] / 1e12) < 1e-9
assert d["peak_tflops"] == 2 and abs(d["mfu"] - d["achieved_tflops"] / 2) < 1e-12
assert d["peak_memory_bytes"] > 0 and d["commit"] and d["device"]
PY
then ok; else bad "results JSON: $J"; fi

expect_error "steps" "steps must be positive" -- "$DMS" bench train --steps -1
expect_error "attention steps" "steps must be positive" -- "$DMS" bench attention --steps -1
expect_error "attention heads" "multiple of --kv-heads" -- "$DMS" bench attention --heads 6 --kv-heads 4
expect_error "attention head dim" "head-dim must be even" -- "$DMS" bench attention --head-dim 7
expect_error "attention tokens" "tokens must be at least 16" -- "$DMS" bench attention --tokens 8
expect_error "attention backend" "backend" -- "$DMS" bench attention --tokens 64 --backend tpu
if DMS_SOURCE_REVISION=packed123 "$DMS" bench attention --tokens 96 --docs 3 --heads 4 --kv-heads 2 --head-dim 16 --window 8 --steps 2 \
    --threads 1 --out "$T/att" >"$T/out" 2>"$T/err"; then ok; else bad "bench attention: rc=$? $(head -c 600 "$T/err")"; fi
grep -q "^forward .* TFLOPS), backward .* (median of 2)" "$T/out" && ok || bad "no attention summary: $(cat "$T/out")"
J=$(ls "$T"/att/attention-H4-KV2-D16-96-cpu-*.json 2>/dev/null | head -1)
if [ -n "$J" ] && python3 - "$J" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert (d["tokens"], d["docs"], d["heads"], d["kv_heads"], d["head_dim"], d["window"]) == (96, 3, 4, 2, 16, 8), d
assert d["backend"] == "cpu" and d["steps_timed"] == 2 and d["commit"] == "packed123" and d["device"]
assert d["causal_pairs"] == 3 * 32 * 33 // 2, d["causal_pairs"]
assert d["forward_flops"] == 4 * d["causal_pairs"] * 4 * 16 and d["backward_flops"] == 2 * d["forward_flops"]
f, b = d["forward_s_median"], d["backward_s_median"]
assert f > 0 and b > 0 and abs(d["fwd_bwd_s_median"] - f - b) < 1e-12
assert abs(d["forward_tflops"] - d["forward_flops"] / f / 1e12) < 1e-9 * d["forward_tflops"]
assert len(d["forward_s_sorted"]) == 2 and d["forward_s_sorted"] == sorted(d["forward_s_sorted"])
PY
then ok; else bad "attention JSON: $J"; fi

# bench/gpu_summary.py on the committed H100 records: its ratios are the records' own
R=bench/results/h100-2026-11-27/run2-tensor-core-attention
expect_error "summary without a log" "no such file" -- python3 bench/gpu_summary.py "$T" "$T/s.json"
if python3 bench/gpu_summary.py "$R" "$T/s.json" >/dev/null && python3 - "$T/s.json" "$R" <<'PY'
import glob, json, sys
s, r = json.load(open(sys.argv[1])), sys.argv[2]
ours = json.load(open(glob.glob(r + "/train-qwen3_1.7b-*.json")[0]))
peer = json.load(open(glob.glob(r + "/peer_nvidia-*.json")[0]))
att = json.load(open(glob.glob(r + "/attention-*.json")[0]))
sd = [x for x in json.load(open(glob.glob(r + "/sdpa-*.json")[0]))["results"] if x["backend"] == "cudnn"][0]
st = s["step_qwen3_1.7b_8k"]
assert abs(st["step_speedup_vs_nvidia"] - peer["median_step_s"] / ours["step_s_median"]) < 1e-12, st
assert abs(s["attention_32k"]["attention_vs_cudnn"] - att["fwd_bwd_s_median"] / sd["fwd_bwd_s_median"]) < 1e-12
assert s["gpu"].startswith("NVIDIA H100") and s["commit"] == "1fa3e09", (s["gpu"], s["commit"])
assert s["suites"]["test_ops cuda"] == 0 and s["qwen3_8b"][0]["layers"] == 4 and s["qwen3_8b_whole_warmup_step_s"] > 0
PY
then ok; else bad "gpu_summary.py on $R"; fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
