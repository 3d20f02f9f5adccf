#!/usr/bin/env python3
"""check_export.py - opens a `dms export` folder with Hugging Face
`transformers` (AutoModelForCausalLM, AutoTokenizer) and compares it with
the source model it was exported from. Not run by CI (it needs torch); run
it by hand after changing model/export.c or model/tokenizer_export.c:

    pip install --target /tmp/expy torch transformers gguf safetensors
    PYTHONPATH=/tmp/expy python3 tests/reference/check_export.py EXPORT \
        --source models/default.gguf [--expected tests/fixtures/tokenizer/smollm2_expected.json]

--source is a Hugging Face folder or a .gguf file (loaded through
transformers' own GGUF support, which dequantises and un-permutes q/k
independently of our loader). Checks:
  1. every base tensor of the source is in the export under the same name
     and shape; tensors whose values differ beyond the export dtype's
     rounding are listed (LoRA merges, neuron decision rows in q_proj);
     extra tensors must be the DMS adapter's (dms_proj_alpha*);
  2. logits of a fixed token sequence: export vs source; when no base tensor
     changed (adapter without LoRA) they must agree to --tol, and the
     measured max |difference| is printed either way;
  3. the tokenizer: the export's encodes a set of mixed strings (code,
     digits, CJK, emoji, special tokens, whitespace runs) exactly as the
     source's (--source-tokenizer, default --source); with --expected, also
     as the ids recorded from Hugging Face's own tokenizer.json;
  4. config.json carries the dms_* fields; the chat template renders the same.
Exit status 1 on any failed check.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

TEXTS = [
    "Hello world! This is a test of the tokenizer, isn't it? We'll see, I'd say.",
    "def foo(x):\n    if x > 1:\n        return x * 2\n\treturn None  # done\n",
    "Numbers: 1234567 and 3.14159, 2024-06-01, 0x1F; v2 x86_64",
    "日本語の文章を書きます。中文也可以。한국어",
    "Emoji: 👋🏽 hi 🇯🇵!! 😀😀 ❤️",
    "a   b\n\n\t c  \n   \n",
    "café vs cafe\u0301 naïve résumé",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\nIt is 4.<|im_end|>\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "HELLO THERE'S WE'LL I'M it's They'Re  \r\n\r\nend",
]
CHAT = [{"role": "user", "content": "Hi there! What's 2+2?"}, {"role": "assistant", "content": "It's 4."}]


def split_gguf(path):
    if path.endswith(".gguf"):
        return (os.path.dirname(path) or "."), {"gguf_file": os.path.basename(path)}
    return path, {}


def load_model(path):
    where, kw = split_gguf(path)
    m = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kw)
    return m.eval()


def load_tokenizer(path):
    where, kw = split_gguf(path)
    return AutoTokenizer.from_pretrained(where, **kw)


def export_tensor_names(folder):
    idx = os.path.join(folder, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    names, dtypes = {}, set()
    for f in files:
        with safe_open(os.path.join(folder, f), framework="pt") as st:
            for n in st.keys():
                t = st.get_slice(n)
                names[n] = list(t.get_shape())
                dtypes.add(str(t.get_dtype()))
    return names, dtypes


def rounded(t, dtype):
    return t.to(dtype).to(torch.float32) if dtype in (torch.bfloat16, torch.float16) else t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export")
    ap.add_argument("--source", required=True, help="HF folder or .gguf the run was trained on")
    ap.add_argument("--source-tokenizer", default=None, help="tokenizer to compare with (default: --source)")
    ap.add_argument("--expected", default=None, help="tests/fixtures/tokenizer/*_expected.json to compare ids with")
    ap.add_argument("--tol", type=float, default=None, help="max |logit diff| (default 1e-4 fp32, 0.5 bf16/fp16)")
    args = ap.parse_args()
    failures = []
    torch.manual_seed(0)

    cfg = json.load(open(os.path.join(args.export, "config.json")))
    dms = {k: v for k, v in cfg.items() if k.startswith("dms_")}
    print(f"export: {args.export}\n  torch_dtype {cfg.get('torch_dtype')}, dms fields: {dms}")
    for k in ("dms_alpha_scale", "dms_initial_alpha_offset", "dms_window_size", "dms_separate_alpha",
              "dms_paged_attention_block_size"):
        if k not in cfg:
            failures.append(f"config.json lacks {k}")
    if "dms_window_size" in cfg and not cfg["dms_window_size"] > cfg.get("dms_paged_attention_block_size", 0):
        failures.append("dms_window_size must exceed dms_paged_attention_block_size")
    exp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(cfg.get("torch_dtype"), torch.float32)

    # 1. tensors
    names, file_dtypes = export_tensor_names(args.export)
    m_e, m_s = load_model(args.export), load_model(args.source)
    sd_e, sd_s = m_e.state_dict(), m_s.state_dict()
    tied = bool(cfg.get("tie_word_embeddings"))
    changed = []
    for n, t in sd_s.items():
        if tied and n == "lm_head.weight":
            continue
        if n not in names:
            failures.append(f"tensor {n} missing from the export")
            continue
        if list(t.shape) != names[n]:
            failures.append(f"tensor {n}: shape {names[n]} vs source {list(t.shape)}")
            continue
        d = (sd_e[n].float() - rounded(t.float(), exp_dtype)).abs().max().item()
        if d > 0:
            changed.append((n, d))
    extra = sorted(set(names) - set(sd_s))
    bad_extra = [n for n in extra if "dms_proj_alpha" not in n]
    if bad_extra:
        failures.append(f"unexpected tensors: {bad_extra[:5]}")
    print(f"  {len(names)} tensors ({', '.join(sorted(file_dtypes))}); {len(extra)} DMS adapter tensors; "
          f"{len(changed)} base tensors differ from the source (after rounding to the export dtype)")
    for n, d in changed[:8]:
        print(f"    {n}: max |diff| {d:.3g}")

    # 2. logits
    V = min(m_e.config.vocab_size, m_s.config.vocab_size)
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, V, (1, 48), generator=g)
    with torch.no_grad():
        le, ls = m_e(ids).logits, m_s(ids).logits
    diff = (le - ls).abs().max().item()
    scale = ls.abs().max().item()
    tol = args.tol if args.tol is not None else (1e-4 if exp_dtype == torch.float32 else 0.5)
    same_argmax = (le.argmax(-1) == ls.argmax(-1)).float().mean().item()
    print(f"  logits vs source: max |diff| {diff:.3g} (logits up to {scale:.3g}), argmax agreement {same_argmax:.3f}")
    if not changed and diff > tol:
        failures.append(f"logits differ by {diff:.3g} > {tol:g} although no base tensor changed")

    # 3. tokenizer
    tok_e = load_tokenizer(args.export)
    src_tok = args.source_tokenizer or args.source
    try:
        tok_s = load_tokenizer(src_tok)
    except Exception as e:  # a source without a tokenizer (tiny fixtures)
        tok_s = None
        print(f"  (no source tokenizer: {type(e).__name__}: {str(e)[:120]})")
    n_same = n_all = 0
    if tok_s is not None:
        for text in TEXTS:
            for special in (False, True):
                a = tok_e(text, add_special_tokens=special)["input_ids"]
                b = tok_s(text, add_special_tokens=special)["input_ids"]
                n_all += 1
                n_same += a == b
                if a != b:
                    failures.append(f"tokenizer: {text[:30]!r} (add_special_tokens={special}): {a[:12]} vs {b[:12]}")
        print(f"  tokenizer vs {src_tok}: {n_same}/{n_all} encodings identical")
        if tok_e.chat_template and tok_s.chat_template:
            ra = tok_e.apply_chat_template(CHAT, tokenize=False)
            rb = tok_s.apply_chat_template(CHAT, tokenize=False)
            if ra != rb:
                failures.append("chat template renders differently")
            else:
                print("  chat template renders identically")
    if args.expected:
        exp = json.load(open(args.expected))
        ok = 0
        for case in exp["cases"]:
            got = tok_e(case["text"], add_special_tokens=False)["input_ids"]
            ok += got == case["ids"]
            if got != case["ids"]:
                failures.append(f"tokenizer vs {args.expected}: {case['text'][:30]!r}")
            dec = tok_e.decode(case["ids"], skip_special_tokens=False)
            if dec != case["decode"]:
                failures.append(f"decode vs {args.expected}: {case['text'][:30]!r}")
        print(f"  tokenizer vs {args.expected}: {ok}/{len(exp['cases'])} encodings identical")

    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
