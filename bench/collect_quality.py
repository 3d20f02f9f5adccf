#!/usr/bin/env python3
"""Collects the `dms eval` results of one bench/quality.sh run
(runs/quality/TAG/*.json) into one compact record for bench/results/:
per task and policy the metric with its standard error, the KV CR
(time-averaged and at the end), the budget, the live tokens and the text.

    python3 bench/collect_quality.py runs/quality/kvcr4 bench/results/quality-kvcr4.json [TRAIN.json]

With TRAIN.json (the training config of the evaluated run) the record
carries the recipe too.
"""
import glob, json, os, platform, subprocess, sys, time


def main():
    src, out = sys.argv[1], sys.argv[2]
    rows = []
    for path in sorted(glob.glob(os.path.join(src, "*.json"))):
        d = json.load(open(path))
        kv = d.get("kv", {})
        rows.append({"task": d["task"], "policy": d["policy"], "tag": d.get("tag"), "model": d["model"],
                     "budget": d.get("budget"),
                     "budget_rule": d.get("budget_rule"), "metric": d.get("metric"), "metrics": d.get("metrics"),
                     "kv_cr": kv.get("kv_cr"), "kv_cr_end": kv.get("kv_cr_end"), "decision_cr": kv.get("decision_cr"),
                     "held_time_mean": kv.get("held_time_mean"), "held_peak": kv.get("held_peak"),
                     "data": d.get("config", {}).get("data"),
                     "window_tokens": d.get("config", {}).get("window_tokens"),
                     "dms_offset": d.get("config", {}).get("dms_offset"),
                     "items": d.get("items_done"), "git_commit": d.get("git_commit")})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    rec = {"bench": "quality", "source": src, "host": platform.node(), "cpu_count": os.cpu_count(),
           "commit": commit, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    if len(sys.argv) > 3:
        rec["train_config"] = json.load(open(sys.argv[3]))
    json.dump(rec, open(out, "w"), indent=1)
    print("%d results -> %s" % (len(rows), out), file=sys.stderr)


if __name__ == "__main__":
    main()
