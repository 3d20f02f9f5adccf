#!/usr/bin/env python3
"""Hugging Face parity fixtures for the C forward pass (tiny random models).

Why this exists
---------------
The C runtime of `dms` re-implements the Llama / Qwen2 / Qwen3 forward pass
(embedding, RMSNorm, RoPE incl. llama3 scaling, GQA attention, SwiGLU MLP,
tied / untied lm_head, Qwen2 qkv bias, Qwen3 q/k-norm) and the loaders for
Hugging Face model folders (config.json, single-file and sharded safetensors
with model.safetensors.index.json, f32 / bf16 / f16 weights).  This script
builds three tiny RANDOM models with `transformers`, saves them in the standard
HF layout and records what transformers computes for them, so that the C
tests can compare against it without needing Python or torch in CI.

What it writes (tests/fixtures/models/tiny_<arch>/ for arch in llama, qwen2,
qwen3):

  config.json                 save_pretrained's config, post-processed into
                              the classic v4 hub layout: top-level
                              "rope_theta", "rope_scaling" (dict with
                              "rope_type", or null) and "torch_dtype", instead
                              of transformers 5.x's "rope_parameters"/"dtype".
  generation_config.json      as written by save_pretrained (unused by C).
  model.safetensors           llama (float32), qwen3 (float16), or
  model-0000k-of-0000n.safetensors + model.safetensors.index.json
                              qwen2 (bfloat16, sharded into 3 files).
  reference.safetensors       input_ids   int32   [1, 24]
                              logits      float32 [1, 24, 512]
                              hidden_1    float32 [1, 24, 64]  (output of
                                          decoder layer 0 = hidden_states[1])
                              greedy_ids  int32   [1, 8]  greedy continuation
                                          of input_ids[:, :6] (KV-cached
                                          model.generate, no EOS stopping)

Model shapes: 2 layers, hidden 64, intermediate 128, 4 query heads, 2 KV heads
(GQA), head_dim 16 (qwen3: 32, so heads*head_dim != hidden), vocab 512.
llama uses rope_theta 500000 with llama3 rope scaling whose
original_max_position_embeddings (64) is small enough that all three regimes
(unscaled, smoothed, scaled by 1/factor) occur at head_dim 16, and tied
embeddings (so lm_head.weight is absent from the file).

Precision: each parameter is rounded to its save dtype and cast back to fp32
BEFORE any reference output is computed, and every reference output comes
from the fp32 model with attn_implementation="eager".  A C implementation
that converts bf16/f16 to fp32 on load and computes in fp32 should therefore
match to ~1e-5 (only float summation order differs).

Everything is seeded and single-threaded, so reruns reproduce the weights
bit-exactly and the reference outputs to within fp32 rounding (usually
bit-exactly on the same torch build).

How to rerun (CPU only, < 1 minute):

    python3 tests/reference/make_model_fixtures.py            # write + verify
    python3 tests/reference/make_model_fixtures.py --out DIR  # elsewhere

After writing, the script reloads each folder with
AutoModelForCausalLM.from_pretrained(dir, dtype=torch.float32) and checks that
the logits, hidden_1 and greedy_ids reproduce reference.safetensors, then runs
an independent float64 numpy forward pass (np_forward below, reading only the
files on disk, i.e. what the C loader sees) against the same references; it
exits non-zero if anything disagrees.  Tested with torch 2.15 / transformers 5.23 /
safetensors 0.8 (see tests/fixtures/models/README.md).
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import transformers
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "models")

T = 24             # reference sequence length
PROMPT_LEN = 6     # greedy decode prompt = input_ids[:, :PROMPT_LEN]
NEW_TOKENS = 8     # greedy decode length
VOCAB = 512
STD_MATRIX = 0.08  # weight matrices and embeddings
STD_NORM = 0.1     # RMSNorm weights are 1 + STD_NORM * randn
STD_BIAS = 0.05
INPUT_SEED = 1234

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    hidden_act="silu",
    use_cache=True,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)

# arch -> (config class, model class, config kwargs, save dtype, shard size,
#          init seed)
ARCHS = {
    "llama": (
        LlamaConfig, LlamaForCausalLM,
        dict(COMMON, head_dim=16, rms_norm_eps=1e-6, rope_theta=500000.0,
             rope_scaling={"rope_type": "llama3", "factor": 8.0,
                           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 64},
             tie_word_embeddings=True, attention_bias=False, mlp_bias=False),
        torch.float32, None, 101),
    "qwen2": (
        Qwen2Config, Qwen2ForCausalLM,
        # head_dim is implicit (hidden / heads = 16) as in real Qwen2 configs;
        # q/k/v biases are always present in Qwen2.
        dict(COMMON, rms_norm_eps=1e-5, rope_theta=10000.0,
             tie_word_embeddings=False, use_sliding_window=False),
        torch.bfloat16, "120KB", 202),
    "qwen3": (
        Qwen3Config, Qwen3ForCausalLM,
        dict(COMMON, head_dim=32, rms_norm_eps=1e-6, rope_theta=10000.0,
             tie_word_embeddings=False, attention_bias=False,
             use_sliding_window=False),
        torch.float16, None, 303),
}

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16",
               torch.float16: "float16"}


def init_weights(model, seed, save_dtype):
    """Random init (big enough for non-trivial logits), rounded to save_dtype."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight"):  # input/post_attention/final/q/k
                v = 1.0 + STD_NORM * torch.randn(p.shape, generator=gen)
            elif name.endswith(".bias"):
                v = STD_BIAS * torch.randn(p.shape, generator=gen)
            else:
                assert p.dim() == 2, name
                v = STD_MATRIX * torch.randn(p.shape, generator=gen)
            p.copy_(v.to(save_dtype).to(torch.float32))


def to_v4_config(path):
    """Rewrite a transformers-5 config.json into the classic v4 hub layout.

    v5 writes "rope_parameters": {"rope_theta": ..., "rope_type": ..., ...}
    and "dtype"; hub checkpoints (and our C parser) use top-level
    "rope_theta", "rope_scaling" ({"rope_type": ..., ...} or null) and
    "torch_dtype".
    """
    with open(path) as f:
        cfg = json.load(f)
    if "rope_parameters" in cfg:
        rp = dict(cfg.pop("rope_parameters"))
        cfg["rope_theta"] = rp.pop("rope_theta")
        if rp.get("rope_type", "default") == "default":
            cfg["rope_scaling"] = None
        else:
            cfg["rope_scaling"] = rp
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    with open(path, "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return cfg


def hidden_after_layer0(model, ids):
    """hidden_states[1], cross-checked against a hook on decoder layer 0."""
    captured = {}

    def hook(_mod, _inp, out):
        captured["h"] = (out[0] if isinstance(out, tuple) else out).detach()

    handle = model.model.layers[0].register_forward_hook(hook)
    try:
        out = model(ids, output_hidden_states=True)
    finally:
        handle.remove()
    h1 = out.hidden_states[1].detach()
    assert torch.equal(h1, captured["h"]), "hidden_states[1] != layer 0 output"
    return out.logits.detach(), h1


def greedy(model, ids):
    """Greedy continuation via KV-cached generate, cross-checked w/o cache."""
    prompt = ids[:, :PROMPT_LEN]
    out = model.generate(prompt, do_sample=False, max_new_tokens=NEW_TOKENS,
                         min_new_tokens=NEW_TOKENS, eos_token_id=None,
                         pad_token_id=0, use_cache=True)
    new = out[:, PROMPT_LEN:]
    assert new.shape == (1, NEW_TOKENS), new.shape
    # Full-recompute argmax loop (no cache); also measure the smallest
    # top-1/top-2 logit margin so we know the fixture is not tie-fragile.
    seq = prompt
    min_margin = float("inf")
    for _ in range(NEW_TOKENS):
        logits = model(seq, use_cache=False).logits[0, -1]
        top2 = torch.topk(logits, 2).values
        min_margin = min(min_margin, float(top2[0] - top2[1]))
        seq = torch.cat([seq, logits.argmax().view(1, 1)], dim=1)
    assert torch.equal(seq[:, PROMPT_LEN:], new), "generate != argmax loop"
    return new, min_margin


def build(arch, out_root):
    cfg_cls, model_cls, kwargs, save_dtype, shard, seed = ARCHS[arch]
    out_dir = os.path.join(out_root, "tiny_" + arch)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)

    config = cfg_cls(**kwargs)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)  # module construction draws from the global RNG
    model = model_cls(config).to(torch.float32).eval()
    init_weights(model, seed, save_dtype)
    if config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == \
            model.model.embed_tokens.weight.data_ptr(), "lm_head not tied"
    model.generation_config.eos_token_id = None
    model.generation_config.bos_token_id = None
    model.generation_config.pad_token_id = None

    gen = torch.Generator().manual_seed(INPUT_SEED)
    ids = torch.randint(0, VOCAB, (1, T), generator=gen, dtype=torch.long)
    with torch.no_grad():
        logits, h1 = hidden_after_layer0(model, ids)
        greedy_ids, margin = greedy(model, ids)

    # Save the (already exactly representable) weights in the save dtype.
    model_save = model.to(save_dtype)
    save_kw = dict(safe_serialization=True) if shard is None else \
        dict(safe_serialization=True, max_shard_size=shard)
    try:
        model_save.save_pretrained(out_dir, **save_kw)
    except TypeError:  # safe_serialization dropped (always on) in some v5
        save_kw.pop("safe_serialization")
        model_save.save_pretrained(out_dir, **save_kw)
    cfg_json = to_v4_config(os.path.join(out_dir, "config.json"))

    save_file({"input_ids": ids.to(torch.int32).contiguous(),
               "logits": logits.float().contiguous(),
               "hidden_1": h1.float().contiguous(),
               "greedy_ids": greedy_ids.to(torch.int32).contiguous()},
              os.path.join(out_dir, "reference.safetensors"),
              # one key only: safetensors writes metadata in hash order, and
              # byte-identical reruns are nice for git.
              metadata={"info": f"tests/reference/make_model_fixtures.py "
                        f"arch={arch} prompt_len={PROMPT_LEN} "
                        f"torch={torch.__version__} "
                        f"transformers={transformers.__version__}"})

    files = sorted(os.listdir(out_dir))
    sizes = {f: os.path.getsize(os.path.join(out_dir, f)) for f in files}
    total = sum(sizes.values())
    print(f"[{arch}] save dtype {DTYPE_NAMES[save_dtype]}, "
          f"max|logit| {logits.abs().max().item():.4f}, "
          f"logit std {logits.std().item():.4f}, "
          f"min greedy top1-top2 margin {margin:.4g}, total {total} bytes")
    print(f"[{arch}]   rope_theta={cfg_json.get('rope_theta')} "
          f"rope_scaling={cfg_json.get('rope_scaling')}")
    for f in files:
        print(f"[{arch}]   {sizes[f]:>8}  {f}")
    assert total < 1_000_000, "fixture dir too large"
    assert margin > 1e-3, "greedy decode too close to a tie; change the seed"
    return out_dir


# --------------------------------------------------------------------------
# Independent check: a from-scratch float64 numpy forward pass that reads only
# the files on disk (v4-layout config.json + safetensors, sharded or not), as
# the C loader does.  It documents the math the C code must implement and
# proves the fixtures are self-consistent without transformers in the loop.
# --------------------------------------------------------------------------

def load_folder(model_dir):
    """config.json and all weights as float64 numpy arrays."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    else:
        shards = ["model.safetensors"]
    w = {}
    for shard in shards:
        for k, v in load_file(os.path.join(model_dir, shard)).items():
            w[k] = v.to(torch.float64).numpy()
    return cfg, w


def np_inv_freq(cfg, head_dim):
    theta = cfg["rope_theta"]
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    rs = cfg.get("rope_scaling")
    if rs is None or rs.get("rope_type", rs.get("type")) == "default":
        return inv
    assert rs["rope_type"] == "llama3", rs
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    wavelen = 2 * np.pi / inv
    smooth = (old / wavelen - lo) / (hi - lo)
    out = np.where(wavelen > old / lo, inv / factor, inv)  # low freq: scaled
    mid = (wavelen >= old / hi) & (wavelen <= old / lo)     # band: smoothed
    return np.where(mid, (1 - smooth) * inv / factor + smooth * inv, out)


def np_forward(cfg, w, ids):
    """logits [T, V] and hidden after layer 0 [T, hidden] for ids [T]."""
    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    eps = cfg["rms_norm_eps"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // nh
    n = len(ids)
    ang = np.arange(n, dtype=np.float64)[:, None] * np_inv_freq(cfg, hd)[None]
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :]  # [T, 1, hd]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]

    def rope(x):  # x [T, heads, hd]; HF "rotate_half" (non-interleaved) RoPE
        rot = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1)
        return x * cos + rot * sin

    def lin(x, name):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    x = w["model.embed_tokens.weight"][ids]
    hidden_1 = None
    causal = np.triu(np.full((n, n), -np.inf), 1)
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = lin(h, p + "self_attn.q_proj").reshape(n, nh, hd)
        k = lin(h, p + "self_attn.k_proj").reshape(n, nkv, hd)
        v = lin(h, p + "self_attn.v_proj").reshape(n, nkv, hd)
        if p + "self_attn.q_norm.weight" in w:  # Qwen3: per-head RMSNorm
            q = rms(q, w[p + "self_attn.q_norm.weight"])
            k = rms(k, w[p + "self_attn.k_norm.weight"])
        q, k = rope(q), rope(k)
        att = np.empty((n, nh, hd))
        for head in range(nh):
            kvh = head // (nh // nkv)
            s = q[:, head] @ k[:, kvh].T / np.sqrt(hd) + causal
            s = np.exp(s - s.max(-1, keepdims=True))
            att[:, head] = (s / s.sum(-1, keepdims=True)) @ v[:, kvh]
        x = x + lin(att.reshape(n, nh * hd), p + "self_attn.o_proj")
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g = lin(h, p + "mlp.gate_proj")
        x = x + lin(g / (1 + np.exp(-g)) * lin(h, p + "mlp.up_proj"),
                    p + "mlp.down_proj")
        if layer == 0:
            hidden_1 = x
    x = rms(x, w["model.norm.weight"])
    head_w = w.get("lm_head.weight")
    if head_w is None:
        assert cfg["tie_word_embeddings"], "lm_head.weight missing, not tied"
        head_w = w["model.embed_tokens.weight"]
    return x @ head_w.T, hidden_1


def verify_numpy(arch, out_dir):
    ref = load_file(os.path.join(out_dir, "reference.safetensors"))
    cfg, w = load_folder(out_dir)
    ids = ref["input_ids"][0].long().numpy()
    logits, h1 = np_forward(cfg, w, ids)
    d_logits = np.abs(logits - ref["logits"][0].double().numpy()).max()
    d_h1 = np.abs(h1 - ref["hidden_1"][0].double().numpy()).max()
    seq = list(ids[:PROMPT_LEN])
    for _ in range(NEW_TOKENS):
        seq.append(int(np_forward(cfg, w, np.array(seq))[0][-1].argmax()))
    same_greedy = seq[PROMPT_LEN:] == ref["greedy_ids"][0].tolist()
    print(f"[{arch}] numpy f64 forward: max|dlogits| {d_logits:.3g}, "
          f"max|dhidden_1| {d_h1:.3g}, greedy equal {same_greedy}")
    return d_logits <= 1e-4 and d_h1 <= 1e-4 and same_greedy


def verify(arch, out_dir):
    """Reload from disk with transformers and compare against the reference."""
    ref = load_file(os.path.join(out_dir, "reference.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(
        out_dir, dtype=torch.float32, attn_implementation="eager").eval()
    # The v4-layout config must still be understood by transformers.
    kwargs = ARCHS[arch][2]
    rp = getattr(model.config, "rope_parameters", None) or {}
    assert float(rp.get("rope_theta")) == kwargs["rope_theta"], rp
    if "rope_scaling" in kwargs:
        for k, v in kwargs["rope_scaling"].items():
            assert rp.get(k) == v, (k, rp)
    ids = ref["input_ids"].long()
    with torch.no_grad():
        logits, h1 = hidden_after_layer0(model, ids)
        greedy_ids, _ = greedy(model, ids)
    d_logits = (logits - ref["logits"]).abs().max().item()
    d_h1 = (h1 - ref["hidden_1"]).abs().max().item()
    same_greedy = torch.equal(greedy_ids.to(torch.int32), ref["greedy_ids"])
    print(f"[{arch}] verify: max|dlogits| {d_logits:.3g}, "
          f"max|dhidden_1| {d_h1:.3g}, greedy equal {same_greedy} "
          f"({ref['greedy_ids'].tolist()[0]})")
    ok = d_logits <= 1e-5 and d_h1 <= 1e-5 and same_greedy
    if arch == "llama":
        # Sensitivity check: dropping the llama3 rope scaling must change the
        # logits noticeably, otherwise the fixture would not test it.
        cfg = model.config
        cfg.rope_parameters = {"rope_type": "default",
                               "rope_theta": kwargs["rope_theta"]}
        plain = LlamaForCausalLM(cfg).eval()
        plain.load_state_dict(model.state_dict())
        with torch.no_grad():
            d = (plain(ids).logits - ref["logits"]).abs().max().item()
        print(f"[{arch}] (without llama3 rope scaling the logits would differ "
              f"by {d:.3g})")
        ok = ok and d > 1e-2
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--arch", nargs="*", default=list(ARCHS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    ok = True
    for arch in args.arch:
        out_dir = build(arch, args.out)
        ok = verify(arch, out_dir) and ok
        ok = verify_numpy(arch, out_dir) and ok
    if not ok:
        print("VERIFICATION FAILED", file=sys.stderr)
        return 1
    print("all fixtures verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
