#!/usr/bin/env python3
"""CPU greedy decode speed of `dms generate` against llama.cpp (through
llama-cpp-python) on the same GGUF file, prompt, token count and thread
count, measured in one run. Writes bench/results/cpu_decode-<host>-<date>.json
with both figures and their ratio. Not a test: it only measures.

    pip install llama-cpp-python        # builds llama.cpp from source
    python3 bench/cpu_decode.py [--model models/default.gguf] [--threads 2]
"""
import argparse, datetime, json, os, platform, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_dms(args):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [os.path.join(ROOT, "build", "dms"), "generate", "--model", args.model, "--raw",
               "--prompt", args.prompt, "--max-tokens", str(args.tokens), "--ignore-eos",
               "--threads", str(args.threads), "--stats-json", f.name]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        stats = json.load(open(f.name))
    stats["text"] = out.stdout.strip()
    return stats


def run_llamacpp(args):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=512, n_threads=args.threads,
                          n_threads_batch=args.threads, n_batch=512, verbose=False)
    eos = llm.token_eos()

    def no_eos(_ids, logits):  # keep going past EOS, as --ignore-eos does
        logits[eos] = -float("inf")
        return logits

    times, pieces = [], []
    t0 = time.perf_counter()
    for chunk in llm.create_completion(args.prompt, max_tokens=args.tokens, temperature=0.0,
                                       top_k=1, stream=True,
                                       logits_processor=llama_cpp.LogitsProcessorList([no_eos])):
        times.append(time.perf_counter())
        pieces.append(chunk["choices"][0]["text"])
    n = len(times)
    return {"prompt_tokens": len(llm.tokenize(args.prompt.encode(), add_bos=False)),
            "new_tokens": n, "decode_steps": n - 1,
            "prefill_s": times[0] - t0, "decode_s": times[-1] - times[0],
            "decode_tok_s": (n - 1) / (times[-1] - times[0]),
            "llama_cpp_python": llama_cpp.__version__, "text": "".join(pieces).strip()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "default.gguf"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--prompt", default="The history of the printing press begins")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = ap.parse_args()
    ours = run_dms(args)
    peer = run_llamacpp(args)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    common = os.path.commonprefix([ours["text"], peer["text"]])
    result = {
        "benchmark": "cpu greedy decode tokens/s, same GGUF, prompt, token count and threads",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit, "cpu": cpu_name(), "threads": args.threads,
        "model": os.path.realpath(args.model), "tokens": args.tokens, "prompt": args.prompt,
        "dms": ours, "llama_cpp": peer,
        "ratio_dms_over_llama_cpp": ours["decode_tok_s"] / peer["decode_tok_s"],
        "greedy_text_common_prefix_chars": len(common),
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "cpu_decode-%s-%s.json" % (platform.node() or "host",
                                                             result["date"][:10]))
    json.dump(result, open(path, "w"), indent=2)
    print("dms %.1f tok/s, llama.cpp %.1f tok/s, ratio %.2f -> %s" % (
        ours["decode_tok_s"], peer["decode_tok_s"], result["ratio_dms_over_llama_cpp"], path))


if __name__ == "__main__":
    sys.exit(main())
