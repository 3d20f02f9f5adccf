#!/usr/bin/env python3
"""Collects bench/ablate.sh runs into one record for bench/results/: per
ablation how its config differs from configs/smollm2_kvcr8.json ("(default)":
the key is absent, so the trainer's default applies), DMS's KL and KV CR on held-out text, H2O's and
sinks' KL at the same measured KV CR, the ratio DMS / H2O, and how many
(layer, KV head) lanes held only their window (<= window + sinks + 1
tokens at the end of a 512-token window) or everything (>= 480).

    python3 bench/collect_ablation.py OUT.json runs/ablate/A runs/ablate/B ...
"""
import json, os, subprocess, sys, time


def kl(d, name, pol):
    p = os.path.join(d, "eval", "kl-%s-%s.json" % (pol, name))
    if not os.path.exists(p):
        return None
    r = json.load(open(p))
    m = r["metrics"] if isinstance(r.get("metrics"), dict) else {}
    return {"kl": m.get("kl", r.get("metric")), "se": m.get("kl_se"), "kv_cr": r["kv"]["kv_cr"],
            "kv_cr_end": r["kv"]["kv_cr_end"], "budget": r.get("budget")}


def lane_shapes(jsonl, cfg, tokens=512):
    """How many lanes held only window + sinks at the end of a window, and how
    many nearly everything (>= tokens - 32), from a DMS kl JSONL."""
    rows = [json.loads(l) for l in open(jsonl)] if os.path.exists(jsonl) else []
    rows = [r for r in rows if "lane_held_end" in r]
    if not rows:
        return None
    n = len(rows[0]["lane_held_end"])
    mean = [sum(r["lane_held_end"][i] for r in rows) / len(rows) for i in range(n)]
    floor = cfg["window"] + cfg.get("sinks", 0) + 1
    return {"lanes": n, "window_only": sum(m <= floor + 3 for m in mean),
            "keep_all": sum(m >= tokens - 32 for m in mean)}


def lanes(d, name, cfg):
    return lane_shapes(os.path.join(d, "eval", "kl-dms-%s.jsonl" % name), cfg)


def main():
    out, dirs = sys.argv[1], sys.argv[2:]
    base = json.load(open("configs/smollm2_kvcr8.json"))
    rows = []
    for d in dirs:
        name = os.path.basename(d.rstrip("/"))
        cfg = json.load(open(os.path.join(d, "train.json")))
        skip = ("output", "save_every", "steps", "_comment")
        over = {k: cfg.get(k, "(default)") for k in sorted(set(base) | set(cfg))
                if k not in skip and base.get(k) != cfg.get(k)}
        rec = {"name": name, "steps": cfg["steps"], "overrides": over}
        for pol in ("dms", "h2o", "sinks"):
            rec[pol] = kl(d, name, pol)
        if rec["dms"] and rec["h2o"] and rec["h2o"]["kl"]:
            rec["dms_over_h2o"] = rec["dms"]["kl"] / rec["h2o"]["kl"]
        rec["lane_shapes"] = lanes(d, name, cfg)
        rows.append(rec)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    json.dump({"bench": "quality-ablation", "date": time.strftime("%Y-%m-%d"), "commit": commit,
               "text": "/usr/share/common-licenses/GPL-3, 8 windows of 512 tokens", "rows": rows},
              open(out, "w"), indent=1)
    for r in rows:
        print("%-10s dms %s h2o %s ratio %s lanes %s" % (r["name"], r["dms"], r["h2o"], r.get("dms_over_h2o"),
                                                          r["lane_shapes"]), file=sys.stderr)


if __name__ == "__main__":
    main()
