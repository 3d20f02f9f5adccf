#!/usr/bin/env python3
"""make_export_fixture.py - writes tests/fixtures/export/tiny_llama.gguf, the
small GGUF model that tests/test_export.c and tests/cli/export.sh export
(a GGUF source has no config.json and no tokenizer.json, so `dms export`
synthesises both; this fixture exercises that path in seconds).

It is tests/fixtures/models/tiny_llama (2 layers, hidden 64, 4/2 heads,
vocab 512, tied embeddings, llama3 rope scaling) converted the way
llama.cpp's convert_hf_to_gguf.py converts a Llama: q/k rows permuted into
llama.cpp's interleaved rope order, the llama3 rope scaling stored only as
per-pair divisors in rope_freqs.weight, F32 tensors; plus the tiny Llama 3
style tokenizer of tests/fixtures/tokenizer/tiny_llama3 cut to the model's
512 ids (merges that need a later id dropped), pre-tokenizer "llama-bpe",
its chat template, BOS/EOS, add_bos_token.

Run from the repository root (needs numpy, gguf, safetensors; only to
regenerate - the C tests read the committed file):
    python3 tests/reference/make_export_fixture.py
"""
import json
import math
import os

import numpy as np
import gguf
from safetensors.numpy import load_file

SRC = "tests/fixtures/models/tiny_llama"
TOK = "tests/fixtures/tokenizer/tiny_llama3"
OUT = "tests/fixtures/export/tiny_llama.gguf"


def permute(w, n_head):
    """llama.cpp's LlamaModel.permute: HF rotate-half rows -> interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_freqs(cfg):
    """llama.cpp's llama3 rope factors (LlamaModel.generate_extra_tensors)."""
    rs = cfg["rope_scaling"]
    base, dim = cfg["rope_theta"], cfg["head_dim"]
    factor, low, high = rs["factor"], rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old = rs.get("original_max_position_embeddings", 8192)
    low_wl, high_wl = old / low, old / high
    out = []
    for f in 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim)):
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(1)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old / wl - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def main():
    cfg = json.load(open(os.path.join(SRC, "config.json")))
    w = load_file(os.path.join(SRC, "model.safetensors"))
    tj = json.load(open(os.path.join(TOK, "tokenizer.json")))
    tc = json.load(open(os.path.join(TOK, "tokenizer_config.json")))
    V = cfg["vocab_size"]
    H, KV, L = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["num_hidden_layers"]
    assert cfg["tie_word_embeddings"] and cfg["rope_scaling"]["rope_type"] == "llama3"

    # tokenizer, cut to the model's vocabulary
    by_id = {i: t for t, i in tj["model"]["vocab"].items()}
    special = set()
    for a in tj["added_tokens"]:
        by_id[a["id"]] = a["content"]
        if a["special"]:
            special.add(a["id"])
    tokens = [by_id[i] for i in range(V)]
    ids = {t: i for i, t in enumerate(tokens)}
    merges = []
    for m in tj["model"]["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if a in ids and b in ids and (a + b) in ids:
            merges.append(f"{a} {b}")
    types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(V)]

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    g = gguf.GGUFWriter(OUT, "llama")
    g.add_name("tiny_llama (dms export fixture)")
    g.add_block_count(L)
    g.add_context_length(cfg["max_position_embeddings"])
    g.add_embedding_length(cfg["hidden_size"])
    g.add_feed_forward_length(cfg["intermediate_size"])
    g.add_head_count(H)
    g.add_head_count_kv(KV)
    g.add_key_length(cfg["head_dim"])
    g.add_value_length(cfg["head_dim"])
    g.add_rope_dimension_count(cfg["head_dim"])
    g.add_rope_freq_base(cfg["rope_theta"])
    g.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    g.add_vocab_size(V)
    g.add_file_type(gguf.LlamaFileType.ALL_F32)
    g.add_tokenizer_model("gpt2")
    g.add_tokenizer_pre("llama-bpe")
    g.add_token_list(tokens)
    g.add_token_types(types)
    g.add_token_merges(merges)
    g.add_bos_token_id(ids[tc["bos_token"]])
    g.add_eos_token_id(ids[tc["eos_token"]])
    g.add_add_bos_token(True)
    g.add_chat_template(tc["chat_template"])

    f32 = lambda a: np.ascontiguousarray(a.astype(np.float32))
    g.add_tensor("token_embd.weight", f32(w["model.embed_tokens.weight"]))
    g.add_tensor("rope_freqs.weight", rope_freqs(cfg))
    for i in range(L):
        p = f"model.layers.{i}."
        g.add_tensor(f"blk.{i}.attn_norm.weight", f32(w[p + "input_layernorm.weight"]))
        g.add_tensor(f"blk.{i}.attn_q.weight", f32(permute(w[p + "self_attn.q_proj.weight"], H)))
        g.add_tensor(f"blk.{i}.attn_k.weight", f32(permute(w[p + "self_attn.k_proj.weight"], KV)))
        g.add_tensor(f"blk.{i}.attn_v.weight", f32(w[p + "self_attn.v_proj.weight"]))
        g.add_tensor(f"blk.{i}.attn_output.weight", f32(w[p + "self_attn.o_proj.weight"]))
        g.add_tensor(f"blk.{i}.ffn_norm.weight", f32(w[p + "post_attention_layernorm.weight"]))
        g.add_tensor(f"blk.{i}.ffn_gate.weight", f32(w[p + "mlp.gate_proj.weight"]))
        g.add_tensor(f"blk.{i}.ffn_up.weight", f32(w[p + "mlp.up_proj.weight"]))
        g.add_tensor(f"blk.{i}.ffn_down.weight", f32(w[p + "mlp.down_proj.weight"]))
    g.add_tensor("output_norm.weight", f32(w["model.norm.weight"]))
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()
    print(f"wrote {OUT}: {len(tokens)} tokens, {len(merges)} merges, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
