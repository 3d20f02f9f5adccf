#!/usr/bin/env python3
"""Collects a bench/trajectory.sh folder (runs/quality/TAG/kl-<policy>-sSTEP.json)
into one record for bench/results/: per checkpoint the decision-CR target of
the schedule, DMS's KL, KV CR and decision CR, each baseline's KL at the
same measured KV CR, the ratio DMS / best baseline, and the lane shapes (how
many (layer, KV head) lanes held only window + sinks at the end of a window,
and how many held nearly everything: at least T - 32 of a window's T tokens).

    python3 bench/collect_trajectory.py runs/quality/TAG RUN/config.json OUT.json
"""
import glob, json, os, re, subprocess, sys, time

from collect_ablation import lane_shapes  # same folder


def kl(path):
    r = json.load(open(path))
    m = r["metrics"]
    return {"kl": m["kl"], "se": m["kl_se"], "kv_cr": r["kv"]["kv_cr"], "kv_cr_end": r["kv"]["kv_cr_end"],
            "decision_cr": r["kv"]["decision_cr"], "budget": r.get("budget"), "windows": m["windows"],
            "window_tokens": r["config"].get("window_tokens")}


def main():
    src, cfg_path, out = sys.argv[1:4]
    cfg = json.load(open(cfg_path))
    steps = sorted({int(m.group(1)) for p in glob.glob(os.path.join(src, "kl-dms-s*.json"))
                    for m in [re.search(r"kl-dms-s(\d+)\.json$", p)] if m})
    rows = []
    for s in steps:
        rec = {"step": s, "decision_cr_target": min(cfg["cr_final"], 1 + s / cfg["steps_per_cr"])}
        for p in sorted(glob.glob(os.path.join(src, "kl-*-s%d.json" % s))):
            pol = re.search(r"kl-(\w+)-s\d+\.json$", p).group(1)
            rec[pol] = kl(p)
        base = [rec[p]["kl"] for p in rec if isinstance(rec[p], dict) and p != "dms"]
        if base:
            rec["dms_over_best_baseline"] = rec["dms"]["kl"] / min(base)
        rec["lane_shapes"] = lane_shapes(os.path.join(src, "kl-dms-s%d.jsonl" % s), cfg, rec["dms"]["window_tokens"] or 512)
        rows.append(rec)
        print("step %4d  dms %.3f at KV CR %.2f  %s  ratio %s  lanes %s" % (
            s, rec["dms"]["kl"], rec["dms"]["kv_cr"],
            " ".join("%s %.3f" % (p, rec[p]["kl"]) for p in rec if isinstance(rec[p], dict) and "kl" in rec[p]
                     and p != "dms"), "%.2f" % rec["dms_over_best_baseline"] if base else "-", rec["lane_shapes"]),
            file=sys.stderr)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    json.dump({"bench": "quality-trajectory", "date": time.strftime("%Y-%m-%d"), "commit": commit,
               "source": src, "train_config": cfg, "text": "/usr/share/common-licenses/GPL-3", "rows": rows},
              open(out, "w"), indent=1)


if __name__ == "__main__":
    main()
