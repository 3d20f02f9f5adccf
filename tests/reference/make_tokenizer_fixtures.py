#!/usr/bin/env python3
"""make_tokenizer_fixtures.py - ground truth for tests/test_tokenizer.c.

Hugging Face `tokenizers` and `transformers` are the reference for our C
byte-level BPE tokenizer and chat rendering. This script
  (a) rebuilds SmolLM2's tokenizer.json from the embedded GGUF's metadata
      exactly as HF ships it and records ids/decodes of a set of tricky texts
      (the C test loads the GGUF itself, so only the expectations are stored);
  (b) trains two tiny byte-level BPE tokenizers (Llama 3 and Qwen2 styles),
      saves them as fixtures, and records their ids/decodes;
  (c) records transformers' apply_chat_template(tokenize=False) output for
      each tokenizer's chat template.

Usage (from the repository root):
  python3 tests/reference/make_tokenizer_fixtures.py [--gguf PATH] [--full-json OUT]
--full-json also writes the full SmolLM2 tokenizer.json reconstruction (2 MB,
not a fixture) for manual comparison with the JSON loader.
"""
import argparse
import json
import os
import sys

import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

OUT_DIR = "tests/fixtures/tokenizer"

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|"
               r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Texts every tokenizer is checked on. Special tokens are written literally;
# they are parsed (encode with special tokens, add_special_tokens=False).
TEXTS = [
    "Hello world! This is a test of the tokenizer, isn't it? We'll see, I'd say.",
    "def foo(x):\n    if x > 1:\n        return x * 2\n\treturn None  # done\n",
    "Numbers: 1234567 and 3.14159, 2024-06-01, 0x1F; v2 x86_64",
    "日本語の文章を書きます。中文也可以。한국어",
    "Emoji: 👋🏽 hi 🇯🇵!! 😀😀 ❤️",
    "a   b\n\n\t c  \n   \n",
    "caf\u00e9 vs cafe\u0301 na\u00efve r\u00e9sum\u00e9 \uff21\uff22 \ufb01",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\nIt is 4.<|im_end|>\n",
    "HELLO THERE'S WE'LL I'M it's They'Re  \r\n\r\nend",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "   leading spaces and trailing   ",
    "<think>\nreasoning here\n</think>\n\nanswer <|endoftext|>",
    "",
    "x",
    "ctl:\x04\x05\x06\x1d\x7f end",  # SmolLM2 has no token for bytes 4, 6, 29: dropped
]

CORPUS = """\
The quick brown fox jumps over the lazy dog. Hello world! This is a small corpus
used to train tiny tokenizers for tests. It isn't large, but it'll do; we're sure.
def tokenize(text):
    for word in text.split():
        yield word.lower()
    return None
Numbers such as 1234567, 3.14159 and 2024-06-01 appear in text, and so do
dates and versions like v2.0.1. Café, naïve, résumé and coöperate have accents.
日本語の文章を書きます。中文也可以。Emoji like 👋 and 🇯🇵 are bytes too.
    Indented lines,\ttabs\tand   runs of   spaces\n\nare common in code.
I'M SHOUTING, THEY'RE SHOUTING, WE'VE ALL SHOUTED. What's this? It's a test.
"""

SMOLLM_TEMPLATE_FALLBACK = None  # the GGUF carries it

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

# Qwen2.5 style: a tools branch (whose "<|im_start|>system\n" literal is not a
# default prompt), then a default system prompt; "\n" written as Jinja escapes.
QWEN2_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\n<tools>\" }}\n"
    "    {{- \"\\n</tools><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\") %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n")

# A ChatML template without a default system prompt (Qwen3 / plain ChatML).
CHATML_PLAIN_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")

CONVERSATIONS = [
    [{"role": "user", "content": "Hi there! What's 2+2?"},
     {"role": "assistant", "content": "  It's 4.\n"}],
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "Name a color.\n"},
     {"role": "assistant", "content": "Blue."}],
]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def field_str(f):
    return bytes(f.parts[f.data[0]]).decode("utf-8")


def field_strs(f):
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def field_ints(f):
    return [int(f.parts[i][0]) for i in f.data]


def smollm2_from_gguf(path):
    r = gguf.GGUFReader(path)
    fl = r.fields
    assert field_str(fl["tokenizer.ggml.model"]) == "gpt2"
    assert field_str(fl["tokenizer.ggml.pre"]) == "smollm"
    tokens = field_strs(fl["tokenizer.ggml.tokens"])
    types = field_ints(fl["tokenizer.ggml.token_type"])
    merges = field_strs(fl["tokenizer.ggml.merges"])
    template = field_str(fl["tokenizer.chat_template"])
    bos = int(fl["tokenizer.ggml.bos_token_id"].parts[-1][0])
    eos = int(fl["tokenizer.ggml.eos_token_id"].parts[-1][0])
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges]))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i, ty in enumerate(types) if ty == 3])
    return tok, template, tokens[bos], tokens[eos]


def train_tiny(kind):
    tok = Tokenizer(models.BPE(ignore_merges=(kind == "llama3")))
    if kind == "llama3":
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                    "<|end_header_id|>", "<|eot_id|>"]
        regex = LLAMA3_REGEX
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        regex = QWEN2_REGEX
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([CORPUS] * 3 + TEXTS, trainer=trainer)
    if kind == "llama3":
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        # Qwen3 ships <think> as a non-special added token: matched always.
        tok.add_tokens([AddedToken("<think>", special=False, normalized=False),
                        AddedToken("</think>", special=False, normalized=False)])
    # ignore_merges must survive training (Llama 3 sets it).
    d = json.loads(tok.to_str())
    d["model"]["ignore_merges"] = (kind == "llama3")
    return Tokenizer.from_str(json.dumps(d))


def encode_cases(tok):
    cases = []
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        cases.append({"text": text, "ids": ids,
                      "decode": tok.decode(ids, skip_special_tokens=False),
                      "decode_skip": tok.decode(ids, skip_special_tokens=True)})
    # special tokens as plain text (parse_special = 0)
    tok.encode_special_tokens = True
    plain = []
    for text in [TEXTS[7], TEXTS[11]]:
        plain.append({"text": text, "ids": tok.encode(text, add_special_tokens=False).ids})
    tok.encode_special_tokens = False
    # lossy decode of a cut byte sequence (emoji split across tokens)
    emoji_ids = tok.encode(TEXTS[4], add_special_tokens=False).ids
    lossy = []
    for k in range(1, len(emoji_ids) + 1):
        lossy.append({"ids": emoji_ids[:k], "decode": tok.decode(emoji_ids[:k])})
    return cases, plain, lossy


def chat_cases(tok, template, bos, eos):
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos)
    out = []
    for conv in CONVERSATIONS:
        for gen in (False, True):
            msgs = conv if not gen else conv[:-1]
            ids = fast.apply_chat_template(msgs, chat_template=template, tokenize=True,
                                           add_generation_prompt=gen)
            if not isinstance(ids, list):  # transformers 5 returns a BatchEncoding
                ids = ids["input_ids"]
            out.append({"messages": msgs, "add_generation_prompt": gen,
                        "rendered": fast.apply_chat_template(msgs, chat_template=template,
                                                             tokenize=False,
                                                             add_generation_prompt=gen),
                        "ids": list(ids)})
    return out


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=os.environ.get("DMS_DEFAULT_GGUF", "models/default.gguf"))
    ap.add_argument("--full-json", default=None)
    args = ap.parse_args()
    if not os.path.exists(args.gguf):
        sys.exit(f"{args.gguf}: missing; link the SmolLM2 GGUF there (see README setup)")
    os.makedirs(OUT_DIR, exist_ok=True)

    tok, template, bos, eos = smollm2_from_gguf(args.gguf)
    if args.full_json:
        tok.save(args.full_json)
    cases, plain, lossy = encode_cases(tok)
    write_json(f"{OUT_DIR}/smollm2_expected.json", {
        "source": "GGUF metadata rebuilt as HF tokenizer.json",
        "bos": bos, "eos": eos, "cases": cases, "plain_special": plain, "lossy": lossy,
        "chat_template": template, "chat": chat_cases(tok, template, bos, eos)})

    for kind, template, bos, eos in (
            ("llama3", LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>"),
            ("qwen2", QWEN2_TEMPLATE, None, "<|im_end|>")):
        tok = train_tiny(kind)
        d = f"{OUT_DIR}/tiny_{kind}"
        os.makedirs(d, exist_ok=True)
        tok.save(f"{d}/tokenizer.json", pretty=False)
        cfg = {"bos_token": bos, "eos_token": eos, "chat_template": template,
               "add_bos_token": kind == "llama3", "tokenizer_class": "PreTrainedTokenizerFast"}
        if kind == "llama3":
            del cfg["add_bos_token"]  # Llama 3 relies on its TemplateProcessing
        write_json(f"{d}/tokenizer_config.json", cfg)
        cases, plain, lossy = encode_cases(tok)
        chat = chat_cases(tok, template, bos, eos)
        if kind == "qwen2":
            for c in chat_cases(tok, CHATML_PLAIN_TEMPLATE, bos, eos):
                c["template"] = "plain"
                chat.append(c)
        write_json(f"{d}/expected.json", {"bos": bos, "eos": eos, "cases": cases,
                                          "plain_special": plain, "lossy": lossy,
                                          "chat_plain_template": CHATML_PLAIN_TEMPLATE,
                                          "chat": chat})
    print("wrote", OUT_DIR)


if __name__ == "__main__":
    main()
