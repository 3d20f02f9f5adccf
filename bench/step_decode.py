#!/usr/bin/env python3
"""Times the CPU training step and CPU greedy decode of one or more `dms`
binaries on the embedded model, back to back, so that a change to the core
can be checked against the revision before it. Not a test."""
import argparse, json, os, statistics, subprocess, sys, tempfile

def train_step_times(dms, cfg, steps, work):
    c = json.load(open(cfg))
    c.update(steps=steps, output=os.path.join(work, "run"), save_every=10**6, log_every=1)
    p = os.path.join(work, "cfg.json")
    json.dump(c, open(p, "w"))
    subprocess.run([dms, "train", "--config", p], check=True, stderr=subprocess.DEVNULL)
    el = [json.loads(l)["elapsed_s"] for l in open(os.path.join(work, "run", "metrics.jsonl"))]
    d = [b - a for a, b in zip(el, el[1:])][2:]  # skip warm-up steps
    return statistics.median(d)

def decode_tok_s(dms, model, tokens, work):
    s = os.path.join(work, "gen.json")
    subprocess.run([dms, "generate", "--model", model, "--raw", "--prompt", "The history of the",
                    "--max-tokens", str(tokens), "--ignore-eos", "--quiet", "--stats-json", s],
                   check=True, stderr=subprocess.DEVNULL)
    return json.load(open(s))["decode_tok_s"]

ap = argparse.ArgumentParser()
ap.add_argument("--bin", action="append", required=True, help="NAME=PATH of a dms binary")
ap.add_argument("--config", default="configs/demo.json")
ap.add_argument("--model", default="models/default.gguf")
ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--tokens", type=int, default=128)
ap.add_argument("--repeat", type=int, default=3)
ap.add_argument("--out")
a = ap.parse_args()
res = {}
for r in range(a.repeat):
    for spec in a.bin:
        name, path = spec.split("=", 1)
        with tempfile.TemporaryDirectory() as w:
            st = train_step_times(path, a.config, a.steps, w)
            dt = decode_tok_s(path, a.model, a.tokens, w)
        res.setdefault(name, {"step_s": [], "decode_tok_s": []})
        res[name]["step_s"].append(st)
        res[name]["decode_tok_s"].append(dt)
        print(f"{name}: step {st:.4f} s, decode {dt:.1f} tok/s", file=sys.stderr)
summary = {n: {"step_s_median": statistics.median(v["step_s"]),
               "decode_tok_s_median": statistics.median(v["decode_tok_s"]), **v} for n, v in res.items()}
print(json.dumps(summary, indent=1))
if a.out:
    json.dump(summary, open(a.out, "w"), indent=1)
