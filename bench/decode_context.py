#!/usr/bin/env python3
"""CPU decode speed of our runtime at long context, DMS against vanilla:
for each context length, a raw prompt of that many tokens (held-out English
text, repeated as needed) is prefilled and N tokens are decoded greedily by
`dms generate --stats-json`, once with the model's own DMS eviction and once
with the plain cache (policy full), back to back on the same model. Records
decode tokens/s, the KV statistics and the bytes held. A benchmark, not a
test; the results go to bench/results/.

    python3 bench/decode_context.py --model EXPORT --contexts 512 2048 8192 --out bench/results/x.json
"""
import argparse, json, os, platform, subprocess, sys, tempfile, time


def text_of_tokens(source, n):
    """About n tokens of raw English text (3.6 characters a token for this
    tokenizer on licence prose; the measured prompt length is recorded)."""
    base = open(source, encoding="utf-8", errors="replace").read()
    while len(base) < 4 * n:
        base += "\n" + base
    return base[: int(3.6 * n)]


def run(dms, model, prompt_file, policy, new_tokens, threads, work):
    stats = os.path.join(work, "stats.json")
    cmd = [dms, "generate", "--model", model, "--raw", "--prompt", open(prompt_file).read(), "--policy", policy,
           "--max-tokens", str(new_tokens), "--ignore-eos", "--quiet", "--stats-json", stats]
    if threads:
        cmd += ["--threads", str(threads)]
    t0 = time.time()
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    s = json.load(open(stats))
    s["wall_s"] = time.time() - t0
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dms", default="build/dms")
    ap.add_argument("--model", required=True, help="a DMS export folder")
    ap.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    ap.add_argument("--contexts", type=int, nargs="+", default=[512, 2048, 8000])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for n in a.contexts:
            pf = os.path.join(work, "prompt.txt")
            open(pf, "w").write(text_of_tokens(a.text, n))
            for policy in ("dms", "full"):
                s = run(a.dms, a.model, pf, policy, a.new_tokens, a.threads, work)
                row = {"context": n, "policy": policy, "prompt_tokens": s["prompt_tokens"],
                       "decode_tok_s": s["decode_tok_s"], "prefill_tok_s": s["prefill_tok_s"],
                       "kv_cr": s["kv_cr"], "decision_cr": s["decision_cr"], "kv_held_mean": s["kv_held_mean"],
                       "kv_bytes_held": s["kv_bytes_held"], "kv_bytes_vanilla": s["kv_bytes_vanilla"],
                       "kv_blocks_peak": s["kv_blocks_peak"], "block_size": s["block_size"]}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = {"bench": "decode_context", "model": a.model, "text": a.text, "new_tokens": a.new_tokens,
           "threads": a.threads or os.cpu_count(), "host": platform.node(), "cpu": platform.processor(),
           "commit": commit, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    print(json.dumps(out, indent=1))
    if a.out:
        json.dump(out, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
