#!/usr/bin/env python3
"""llama.cpp's side of `dms bench decode --cpu` (cli/bench_decode.c runs it):
greedy decoding through llama-cpp-python on the same GGUF file, the same
prompt token ids, thread count and token count as ours, timed the way
`dms generate` times itself: prefill = evaluating the prompt, decode = the
tokens - 1 forward calls after it (each picks the argmax of the last
logits, past any end-of-turn token). Prints one JSON object on stdout;
exit status 3 with {"error": ...} when llama_cpp cannot be imported.

    python3 bench/llama_cpp_decode.py --model models/default.gguf \
        --ids prompt.json --tokens 64 --threads 2 [--flash-attn]
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids", required=True, help="JSON file: the prompt's token ids")
    ap.add_argument("--tokens", type=int, required=True, help="new tokens (decode steps + 1)")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--flash-attn", action="store_true", help="llama.cpp's flash attention (default off)")
    args = ap.parse_args()
    try:
        import numpy as np
        import llama_cpp
    except ImportError as e:
        print(json.dumps({"error": "llama-cpp-python not importable by %s (%s)" % (sys.executable, e)}))
        return 3
    ids = json.load(open(args.ids))
    n_ctx = len(ids) + args.tokens + 8
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=n_ctx, n_batch=512, n_ubatch=512,
                          n_threads=args.threads, n_threads_batch=args.threads,
                          flash_attn=args.flash_attn, verbose=False)
    n_vocab = llm.n_vocab()

    def last_argmax():
        return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))))

    t0 = time.perf_counter()
    llm.eval(ids)
    out = [last_argmax()]
    t1 = time.perf_counter()
    while len(out) < args.tokens:
        llm.eval([out[-1]])
        out.append(last_argmax())
    t2 = time.perf_counter()
    print(json.dumps({
        "prompt_tokens": len(ids), "new_tokens": len(out), "decode_steps": len(out) - 1,
        "prefill_s": t1 - t0, "decode_s": t2 - t1,
        "prefill_tok_s": len(ids) / (t1 - t0), "decode_tok_s": (len(out) - 1) / (t2 - t1) if t2 > t1 else 0,
        "flash_attn": bool(args.flash_attn), "kv_type": "f16 (llama.cpp default)", "n_ctx": n_ctx,
        "llama_cpp_python": llama_cpp.__version__, "ids": out,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
