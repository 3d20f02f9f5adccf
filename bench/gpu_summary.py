#!/usr/bin/env python3
"""Summarise one scripts/gpu_check.sh run: the ratios issue 14 asks for.

Reads the records a run wrote to $OUT (copied here into a folder): the
`dms bench train` records (train-*.json), NVIDIA's trainer (peer_nvidia-*.json),
`dms bench attention` (attention-*.json), PyTorch SDPA (sdpa-*.json) and the
log (gpu_check.log, for the packed build's commit and the suites' results).
Writes one JSON with the figures and the ratios computed from them:

  * step_speedup_vs_nvidia: NVIDIA's median step / ours, same GPU, same shape,
    back to back (goal: at least 3);
  * attention_vs_cudnn: our DMS attention forward + backward / cuDNN's plain
    causal SDPA forward + backward at the same shape (goal: at most 1.3);
  * the Qwen3-8B records (MFU, step time, peak memory) as they are.

Usage: python3 bench/gpu_summary.py RUN_DIR OUT.json [--note TEXT]
"""
import argparse
import glob
import json
import os
import re
import sys


def load(pattern):
    return [json.load(open(f)) | {"_file": os.path.basename(f)} for f in sorted(glob.glob(pattern))]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("out")
    p.add_argument("--note", default="", help="what differs in this run (recorded as is)")
    a = p.parse_args(argv)
    log_path = os.path.join(a.run_dir, "gpu_check.log")
    if not os.path.isfile(log_path):
        sys.exit(f"gpu_summary: {log_path}: no such file (copy the run's $OUT here)")
    log = open(log_path, errors="replace").read()
    m = re.search(r"^commit packed: ([^,\s]+)", log, re.M)
    gpu = re.search(r"^GPU 0: (.+?) \(UUID", log, re.M)
    suites = re.findall(r"^==== (test_\S+ cuda[^(]*|compute-sanitizer [^(]*?): rc (\d+)", log, re.M)
    res = {"what": "scripts/gpu_check.sh run: issue 14's figures and ratios (bench/gpu_summary.py)",
           "gpu": gpu.group(1) if gpu else None, "commit": m.group(1) if m else None, "note": a.note,
           "suites": {name.strip(): int(rc) for name, rc in suites}, "files": sorted(os.listdir(a.run_dir))}
    # the records at the run's top, then the whole model's (gpu_check's part 'whole' writes under whole/)
    train = load(os.path.join(a.run_dir, "train-*.json")) + load(os.path.join(a.run_dir, "whole", "train-*.json"))
    peer = load(os.path.join(a.run_dir, "peer_nvidia-*.json"))
    ours_17 = [t for t in train if t["model"].rstrip("/").endswith("qwen3_1.7b") and t["tokens"] == 8192]
    if ours_17 and peer:
        o, n = ours_17[0], peer[0]
        res["step_qwen3_1.7b_8k"] = {
            "ours_s": o["step_s_median"], "nvidia_s": n["median_step_s"],
            "step_speedup_vs_nvidia": n["median_step_s"] / o["step_s_median"], "goal": ">= 3",
            "ours_mfu": o.get("mfu"), "ours_peak_memory_gib": o["peak_memory_bytes"] / 2 ** 30,
            "nvidia_peak_memory_gib": n["peak_memory_bytes"] / 2 ** 30,
            "nvidia_source": n.get("peer_source"), "nvidia_differences": n.get("differences_from_full_trainer")}
    res["qwen3_8b"] = [{"layers": t["layers"], "tokens": t["tokens"], "step_s": t["step_s_median"],
                        "mfu": t.get("mfu"), "peak_memory_gib": t["peak_memory_bytes"] / 2 ** 30,
                        "phase_s_mean": t["phase_s_mean"]}
                       for t in train if t["model"].rstrip("/").endswith("qwen3_8b")]
    warm = re.search(r"==== bench train qwen3-8b 32K.*?\n\[bench train\] warm-up step 1/1: ([0-9.]+) s", log, re.S)
    if warm:
        res["qwen3_8b_whole_warmup_step_s"] = float(warm.group(1))
    att, sd = load(os.path.join(a.run_dir, "attention-*.json")), load(os.path.join(a.run_dir, "sdpa-*.json"))
    if att and sd:
        cud = [r for r in sd[0]["results"] if r.get("backend") == "cudnn" and "error" not in r]
        ours = att[0]
        entry = {"shape": {k: ours[k] for k in ("tokens", "heads", "kv_heads", "head_dim", "window")},
                 "ours_fwd_s": ours["forward_s_median"], "ours_bwd_s": ours["backward_s_median"],
                 "ours_fwd_tflops": ours["forward_tflops"], "ours_bwd_tflops": ours["backward_tflops"]}
        if cud:
            c = cud[0]
            entry |= {"cudnn_fwd_s": c["forward_s_median"], "cudnn_bwd_s": c["backward_s_median"],
                      "attention_vs_cudnn": ours["fwd_bwd_s_median"] / c["fwd_bwd_s_median"], "goal": "<= 1.3"}
        if sd[0].get("gemm_ceiling"):
            entry["bf16_gemm_ceiling_tflops"] = sd[0]["gemm_ceiling"]["tflops"]
        res["attention_32k"] = entry
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    s = res.get("step_qwen3_1.7b_8k", {})
    print(f"gpu_summary: {res['gpu']} at {res['commit']}: step speedup vs NVIDIA "
          f"{s.get('step_speedup_vs_nvidia', float('nan')):.2f}, attention vs cuDNN "
          f"{res.get('attention_32k', {}).get('attention_vs_cudnn', float('nan')):.1f} -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
