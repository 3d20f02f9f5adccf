#!/usr/bin/env python3
"""Fixtures from NVIDIA's own DMS inference code, run on the CPU.

Why this exists
---------------
Our other DMS fixtures (tests/reference/make_dms_fixtures.py) come from our
own PyTorch re-statement of the method.  This script instead runs NVIDIA
Model-Optimizer's `experimental/dms` inference path itself (their config
class, their Qwen3 modeling, their DMSCache / paged cache, their prefill
attention) on two tiny random Qwen3 models and records what it produces, so
that the C runtime can be checked against the official implementation without
Python in CI.  NVIDIA's code is NOT part of this repository: the script
imports it from a scratch folder given on the command line.

Nothing from NVIDIA is committed: the fixture folders hold config.json (as
their save path writes it, minus `architectures`, exactly as their export
`extract_student_model` does; no `auto_map`, no .py files), model.safetensors
(fp32) and expected.safetensors (our recordings).

Versions used for the committed fixtures
----------------------------------------
* NVIDIA/Model-Optimizer commit a2fbac7bad8ab446d3f8783dadb0c3366eb0ad73
  (2026-08-21), folder experimental/dms (pyproject pins transformers==4.57.3).
* transformers 4.57.3, torch 2.15.0 (PyPI wheel, run on the CPU), numpy,
  safetensors 0.8.0, Python 3.11.
* Weights and input ids are drawn with numpy's PCG64 (seeded), not torch's
  RNG, so the fixture does not depend on the torch version's generator.

How to regenerate
-----------------
    # NVIDIA's code (any git snapshot of the repository; record its commit)
    git --git-dir=<mirror of NVIDIA/Model-Optimizer> archive <commit> \
        experimental/dms | tar -x -C /tmp/nvdms
    # Python packages into their own folder (system site-packages untouched)
    pip install --target /tmp/nvpy torch transformers==4.57.3 safetensors \
        numpy pytest
    python3 tests/reference/nvidia/make_nvidia_fixtures.py \
        --nvidia /tmp/nvdms/experimental/dms --pydeps /tmp/nvpy \
        [--out tests/fixtures/nvidia] [--check-determinism]
pytest is needed only because NVIDIA's plain-PyTorch stand-in for
flash_attn_with_kvcache lives in their test module, which imports it.

Runtime patches (NVIDIA's files are not edited; semantics unchanged)
--------------------------------------------------------------------
1. `torch.compile` is replaced by the identity before NVIDIA's modules are
   imported (their decorators `@torch.compile()` and the FlexAttention prefill
   then run eagerly; FlexAttention's eager CPU path is its dense definition).
2. `flash_attn_with_kvcache` (CUDA-only, absent here) is replaced by
   `fake_flash_attn_with_kvcache` from NVIDIA's own
   tests/test_prefill_and_generate.py: `dms.attention.dms_attn_eval_mode` is
   wrapped with functools.partial(flash_attn_fn=<their fake>), because the
   real default argument was bound to None at import time.
3. `dms_modeling.dms_attention` (the name their attention module calls) is
   wrapped by a recorder that stores, per call, the layer index, the decisions
   and decision logits their `prepare_attention_input` produced and the
   post-RoPE keys, then calls the original unchanged.  The decisions in the
   fixture are therefore NVIDIA's own tensors, not recomputed by us.
No fork_rng / noise patch is needed: inference draws no noise.  No float64
patch: everything runs in float32, as NVIDIA runs it (their prefill merges the
paged and local parts with fp32 log-sum-exp; with our weights float32 is the
honest precision of these fixtures).

Models (config.json per variant)
--------------------------------
Qwen3: 2 layers, hidden 64, 4 query heads, 2 KV heads, head_dim 16,
intermediate 128, vocab 512, rms_norm_eps 1e-6, rope_theta 10000,
tie_word_embeddings false, max_position_embeddings 128, sdpa.
DMS: dms_window_size w = 8, dms_paged_attention_block_size 4,
dms_alpha_scale 100, dms_initial_alpha_offset 5, dms_alpha_per "head",
dms_preallocate_for_tokens 64, dms_disable_eviction false.
* adapter/: dms_separate_alpha true; dms_proj_alpha ~ N(0, 0.016^2) (not
  zero), dms_proj_alpha_norm ~ 1 + 0.1 N(0,1).
* neuron/:  dms_separate_alpha false; no extra tensors; the q_proj rows
  g*G*D + D-1 (first query head of each KV group, last channel) are scaled
  by 2.
Other weights: embeddings N(0,1); linear layers N(0, 1/fan_in); every RMSNorm
weight 1 + 0.1 N(0,1).  The saved model is reloaded with NVIDIA's
`from_pretrained` before any run, so the runs use exactly the saved weights.
NVIDIA's config class does not store `dms_compile_limit`, so config.json has
no such key; it does carry every other dms_* field.  transformers 4.57 writes
the weight dtype as "dtype" (not "torch_dtype") and omits the null
bos/eos/pad ids.

expected.safetensors (per variant; T = 40 tokens, L = 2, KV = 2, V = 512)
------------------------------------------------------------------------
All float tensors float32, integer tensors int32 except the 0/1 masks
cache_held / prefill_cache_held (uint8); batch 1 squeezed.
Row t always refers to absolute token position t.
  input_ids        [T]        random ids in [0, V).
  logits_decode    [T, V]     token by token with one DMSCache: call 0 is a
                              prefill of token 0 alone (NVIDIA's prefill mode),
                              calls 1..T-1 feed one token each (their
                              inference mode, paged cache with eviction).
                              Row t = logits after feeding token t.
  cache_len        [T, L, KV] entries NVIDIA's cache holds for (layer, KV
                              head) after the call that fed token t (paged
                              cache_seq_lengths, plus the contiguous "recent"
                              cache while in prefill mode, i.e. after call 0).
  cache_held       [T, L, KV, T] (u8) 1 if token j's key is held after the call
                              that fed token t (found by matching the stored
                              key vectors exactly against the post-RoPE keys
                              of every token); sum over j == cache_len.
  decisions        [T, L, KV] NVIDIA's hard decision d_t = [z_t > 0] emitted
                              by token t (about token t-1) in the decode run.
  decision_logits  [T, L, KV] z_t itself (scale * logit - offset).
  logits_prefill   [T, V]     one forward of all T tokens on a fresh cache
                              (NVIDIA returns every position's logits).
  prefill_cache_len  [L, KV]   entries held after that prefill.
  prefill_cache_held [L, KV, T] (u8) which tokens are held after that prefill.
  logits_chunked   [T, V]     one forward of all T tokens with
                              config.dms_chunked_prefill = 7 (NVIDIA's own
                              chunk loop inside the model).
  logits_mixed     [T, V]     prefill of tokens 0..P-1 in one call (P = 19,
                              rows 0..P-1 from that call), then one token
                              per call (rows P..T-1): prompt then generate.
  cache_len_mixed  [T, L, KV] as cache_len for that run; rows 0..P-2 are -1
                              (inside the prefill call), row P-1 = after it.
  vanilla_logits   [T, V]     same weights, dms_disable_eviction = true, token
                              by token as logits_decode.  For the neuron
                              variant this is still the DMS model (channel
                              D-1 of the decision heads zeroed), only without
                              eviction.
The header metadata key "fixture" (a JSON string) repeats the NVIDIA commit,
versions, w, block size, chunk size and P.

Semantics observed in NVIDIA's code (checked by this script on every run)
-------------------------------------------------------------------------
Let w = dms_window_size.  NVIDIA's model builds its cache with window w + 1
(`get_cache`), i.e. a ring of the w + 1 newest tokens.
* Decode: when token t arrives, the ring entry of token t-w-1 is examined; if
  its flag (= d_{t-w}, the decision emitted by its successor) is set, its
  slot is overwritten by token t (the count stays), else token t takes a new
  slot.  This happens before token t's attention, so query t attends exactly
  to { j <= t : t - j <= w  or  d_{j+1} = 0 }: the current token plus the w
  previous ones are always visible; a flagged token j is last seen by query
  j + w and is gone from the cache after token j + w + 1 is fed.
  Example from adapter/ (w = 8, layer 0, KV head 0): d_2 = 1 and
  d_8 = d_9 = d_10 = 1, d_11 = d_12 = 0; after feeding token 20 the cache
  holds {0, 2..6, 10..20} (cache_len 17): token 1 left when token 10 arrived
  (cache_len stayed 10), tokens 7, 8, 9 left when tokens 16, 17, 18 arrived
  (cache_len stayed 15), tokens 10 and 11 stay for good.  d_0 is never used;
  d_t for the last fed token only marks t-1 for a later eviction.
* Prefill (one call): the attention is the dense mask of the same rule (key j
  visible to query i iff i - j <= w or d_{j+1} = 0), and after the call the
  flagged tokens with j <= n-w-2 (n = tokens so far) are dropped; the w+1
  newest stay in a contiguous cache until the first single-token call, which
  moves them into the paged cache.  The held set after a prefill equals the
  held set after token-by-token decoding of the same tokens, and prefill,
  chunked prefill and decode logits agree to float32 rounding.
* The last token's own decision about its predecessor is applied (flag
  stored) but only acts w steps later; there is no attention sink and no
  protected first token.
* cache length never shrinks in decode: an eviction reuses the evicted slot
  for the new token (length unchanged), otherwise the length grows by one.
These agree with docs/dms_reference_notes.md §4 and DESIGN.md §1
"Inference" (window counts the w previous tokens plus the current one).
"""

import argparse
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings

NVIDIA_COMMIT = "a2fbac7bad8ab446d3f8783dadb0c3366eb0ad73"

T = 40
WINDOW = 8
BLOCK = 4
CHUNK = 7
MIXED_P = 19
SEED = {"adapter": 1234, "neuron": 4321}
ADAPTER_STD = 0.016
NEURON_ROW_SCALE = 2.0

CFG = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=10000.0,
    tie_word_embeddings=False, attention_bias=False, bos_token_id=None,
    eos_token_id=None, pad_token_id=None,
    dms_window_size=WINDOW, dms_paged_attention_block_size=BLOCK,
    dms_alpha_scale=100.0, dms_initial_alpha_offset=5.0, dms_alpha_per="head",
    dms_disable_eviction=False, dms_preallocate_for_tokens=64,
)


def parse_args():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nvidia", required=True,
                   help="path of NVIDIA's experimental/dms folder (scratch copy)")
    p.add_argument("--pydeps", default=None,
                   help="pip --target folder holding torch / transformers==4.57.3")
    p.add_argument("--out", default=os.path.join(repo, "tests", "fixtures", "nvidia"))
    p.add_argument("--check-determinism", action="store_true",
                   help="generate twice into scratch folders and compare bytes")
    return p.parse_args()


ARGS = parse_args()
if ARGS.pydeps:
    sys.path.insert(0, os.path.abspath(ARGS.pydeps))
# NVIDIA's modules import as `dms.*` / `models.*`; their test module as
# `experimental.dms.tests.*`.
NV = os.path.abspath(ARGS.nvidia)
sys.path.insert(1, NV)
sys.path.insert(2, os.path.dirname(os.path.dirname(NV)))
os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402


# --- patch 1: torch.compile -> identity (before NVIDIA's imports) ----------
def _no_compile(fn=None, *args, **kwargs):
    return fn if fn is not None else (lambda f: f)


torch.compile = _no_compile

import dms.attention as dms_attention_mod  # noqa: E402
from experimental.dms.tests.test_prefill_and_generate import (  # noqa: E402
    fake_flash_attn_with_kvcache,
)
import models.qwen3.modeling_qwen3_dms as dms_modeling  # noqa: E402
from models.qwen3.configuration_qwen3_dms import Qwen3ConfigDMS  # noqa: E402
from models.qwen3.modeling_qwen3_dms import Qwen3ForCausalLMDMS  # noqa: E402

# --- patch 2: flash_attn_with_kvcache -> NVIDIA's own plain-PyTorch fake ---
dms_attention_mod.dms_attn_eval_mode = functools.partial(
    dms_attention_mod.dms_attn_eval_mode, flash_attn_fn=fake_flash_attn_with_kvcache)


# --- patch 3: record what NVIDIA's attention receives ----------------------
class Recorder:
    def __init__(self):
        self.calls = []

    def reset(self):
        self.calls = []


REC = Recorder()
_orig_dms_attention = dms_modeling.dms_attention


def _recording_dms_attention(**kw):
    REC.calls.append(dict(
        layer=kw["layer_idx"],
        decisions=kw["decisions"].detach().clone(),        # [B, KV, n]
        logits=kw["decision_logits"].detach().clone(),     # [B, KV, n]
        keys=kw["new_k"].detach().clone(),                 # [B, KV, n, D]
    ))
    return _orig_dms_attention(**kw)


dms_modeling.dms_attention = _recording_dms_attention


# --------------------------------------------------------------------------
def make_weights(model, variant, rng):
    """Fills every parameter from numpy's PCG64 (float32)."""
    cfg = model.config
    G = cfg.num_attention_heads // cfg.num_key_value_heads
    D = cfg.head_dim
    sd = {}
    for name, p in model.named_parameters():
        shape = tuple(p.shape)
        if name.endswith("embed_tokens.weight"):
            w = rng.standard_normal(shape)
        elif "dms_proj_alpha.weight" in name:
            w = ADAPTER_STD * rng.standard_normal(shape)
        elif len(shape) == 1:  # every RMSNorm weight
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        else:  # linear [out, in]
            w = rng.standard_normal(shape) / np.sqrt(shape[1])
        if variant == "neuron" and name.endswith("q_proj.weight"):
            for g in range(cfg.num_key_value_heads):
                w[g * G * D + D - 1, :] *= NEURON_ROW_SCALE
        sd[name] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not missing and not unexpected, (missing, unexpected)


def build_and_save(variant, folder):
    rng = np.random.Generator(np.random.PCG64(SEED[variant]))
    cfg = Qwen3ConfigDMS(dms_separate_alpha=(variant == "adapter"), **CFG)
    model = Qwen3ForCausalLMDMS(cfg).to(torch.float32).eval()
    make_weights(model, variant, rng)
    ids = rng.integers(0, cfg.vocab_size, size=T).astype(np.int32)
    tmp = tempfile.mkdtemp(prefix="nvdms_save_")
    model.save_pretrained(tmp)  # NVIDIA's save path (transformers')
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(tmp, "config.json")) as f:
        conf = json.load(f)
    conf.pop("architectures", None)  # as NVIDIA's extract_student_model
    assert "auto_map" not in conf
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(conf, f, indent=2, sort_keys=True)
        f.write("\n")
    shutil.copyfile(os.path.join(tmp, "model.safetensors"),
                    os.path.join(folder, "model.safetensors"))
    shutil.rmtree(tmp)
    return ids


def load(folder, **overrides):
    cfg = Qwen3ConfigDMS.from_pretrained(folder)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    model = Qwen3ForCausalLMDMS.from_pretrained(folder, config=cfg, dtype=torch.float32)
    return model.eval()


# --------------------------------------------------------------------------
def held_now(cache, keys_seen, L, KV):
    """[L, KV, T] 0/1: which tokens' keys the cache holds now (exact match)."""
    held = np.zeros((L, KV, T), dtype=np.int32)
    counts = np.zeros((L, KV), dtype=np.int32)
    for l in range(L):
        layer = cache.layers[l]
        K = keys_seen[l]  # [KV, n, D]
        stored = [[] for _ in range(KV)]
        pc = layer.paged_cache
        if pc.cache_seq_lengths is not None:
            bs = pc.block_size
            for h in range(KV):
                for s in range(int(pc.cache_seq_lengths[h])):
                    blk = int(pc.block_table[h, s // bs])
                    stored[h].append(pc.key_blocks[blk, s % bs, 0])
        cc = layer.cont_cache
        if cc.key_cache is not None:
            for h in range(KV):
                n = int(cc.cache_seq_lengths.reshape(-1)[h])
                kc = cc.key_cache[0, h]
                for s in range(kc.shape[0] - n, kc.shape[0]):
                    stored[h].append(kc[s])
        for h in range(KV):
            counts[l, h] = len(stored[h])
            for vec in stored[h]:
                match = (K[h] == vec[None, :]).all(dim=1).nonzero().flatten().tolist()
                assert len(match) == 1, f"layer {l} head {h}: key matches {match}"
                assert held[l, h, match[0]] == 0, "token held twice"
                held[l, h, match[0]] = 1
    return held, counts


def rule_held(dec, t):
    """Held set predicted by the DESIGN §1 rule after tokens 0..t ([L,KV,T])."""
    L, KV = dec.shape[1], dec.shape[2]
    out = np.zeros((L, KV, T), dtype=np.int32)
    for j in range(t + 1):
        flag = dec[j + 1] if j + 1 <= t else np.zeros((L, KV), dtype=np.int32)
        out[:, :, j] = np.where((t - j > WINDOW) & (flag == 1), 0, 1)
    return out


def collect(calls, L, KV, key):
    """Concatenate the recorded per-layer tensors of a run along tokens."""
    per_layer = [[c[key][0] for c in calls if c["layer"] == l] for l in range(L)]
    return [torch.cat(p, dim=1) for p in per_layer]  # each [KV, n(, D)]


def run_calls(model, ids, splits):
    """Feeds ids in consecutive pieces (lengths `splits`) to one cache."""
    L, KV = model.config.num_hidden_layers, model.config.num_key_value_heads
    cache = model.get_cache()
    REC.reset()
    logits, lens, helds, ends = [], [], [], []
    pos = 0
    with torch.no_grad():
        for n in splits:
            x = torch.from_numpy(ids[pos:pos + n].astype(np.int64))[None, :]
            out = model(input_ids=x, past_key_values=cache, use_cache=True)
            logits.append(out.logits[0].float())
            pos += n
            keys = collect(REC.calls, L, KV, "keys")
            held, counts = held_now(cache, keys, L, KV)
            helds.append(held)
            lens.append(counts)
            ends.append(pos - 1)
    assert pos == T
    dec = torch.stack(collect(REC.calls, L, KV, "decisions"), 0)   # [L, KV, T]
    z = torch.stack(collect(REC.calls, L, KV, "logits"), 0)
    dec = dec.permute(2, 0, 1).to(torch.int32).numpy()            # [T, L, KV]
    z = z.permute(2, 0, 1).float().numpy()
    return dict(logits=torch.cat(logits, 0).numpy(), lens=lens, helds=helds,
                ends=ends, dec=dec, z=z, cache=cache)


def run_variant(variant, folder):
    ids = build_and_save(variant, folder)
    model = load(folder)
    L, KV = model.config.num_hidden_layers, model.config.num_key_value_heads
    report = {}

    dec_run = run_calls(model, ids, [1] * T)
    dec = dec_run["dec"]
    cache_len = np.stack(dec_run["lens"], 0)
    cache_held = np.stack(dec_run["helds"], 0)
    assert (cache_held.sum(-1) == cache_len).all()
    for t in range(T):
        exp = rule_held(dec, t)
        assert (cache_held[t] == exp).all(), f"{variant}: decode held set differs at t={t}"
    cr = dec_run["cache"].get_cr()
    report["nvidia_get_cr_after_decode"] = cr

    pre = run_calls(model, ids, [T])
    assert (pre["dec"] == dec).all(), "prefill decisions differ from decode"
    assert (pre["helds"][0] == rule_held(dec, T - 1)).all(), "prefill held set differs"

    model.config.dms_chunked_prefill = CHUNK
    chk = run_calls(model, ids, [T])
    model.config.dms_chunked_prefill = None
    assert (chk["helds"][0] == rule_held(dec, T - 1)).all(), "chunked held set differs"

    pieces = [CHUNK] * (T // CHUNK) + ([T % CHUNK] if T % CHUNK else [])
    multi = run_calls(model, ids, pieces)
    for held, end in zip(multi["helds"], multi["ends"]):
        assert (held == rule_held(dec, end)).all(), f"multi-call held set differs at {end}"

    mix = run_calls(model, ids, [MIXED_P] + [1] * (T - MIXED_P))
    cache_len_mixed = -np.ones((T, L, KV), dtype=np.int32)
    for held, cnt, end in zip(mix["helds"], mix["lens"], mix["ends"]):
        assert (held == rule_held(dec, end)).all(), f"mixed held set differs at {end}"
        cache_len_mixed[end] = cnt

    van_model = load(folder, dms_disable_eviction=True)
    van = run_calls(van_model, ids, [1] * T)
    assert (van["dec"] == 0).all()
    for held, end in zip(van["helds"], van["ends"]):
        assert (held == (np.arange(T) <= end)[None, None, :]).all(), "vanilla lost a token"

    ld = dec_run["logits"]
    report.update(
        flagged_fraction=float(dec[1:].mean()),
        flagged_per_layer=[float(dec[1:, l].mean()) for l in range(L)],
        min_abs_z=float(np.abs(dec_run["z"][1:]).min()),
        max_diff_prefill_vs_decode=float(np.abs(pre["logits"] - ld).max()),
        max_diff_chunked_vs_decode=float(np.abs(chk["logits"] - ld).max()),
        max_diff_multicall_vs_decode=float(np.abs(multi["logits"] - ld).max()),
        max_diff_mixed_vs_decode=float(np.abs(mix["logits"] - ld).max()),
        max_diff_vanilla_vs_decode=float(np.abs(van["logits"] - ld).max()),
        logits_absmax=float(np.abs(ld).max()),
        final_cache_len=cache_len[-1].tolist(),
    )

    i32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32))  # noqa: E731
    u8 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.uint8))  # noqa: E731
    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    tensors = {
        "input_ids": i32(ids),
        "logits_decode": f32(ld),
        "cache_len": i32(cache_len),
        "cache_held": u8(cache_held),
        "decisions": i32(dec),
        "decision_logits": f32(dec_run["z"]),
        "logits_prefill": f32(pre["logits"]),
        "prefill_cache_len": i32(pre["lens"][0]),
        "prefill_cache_held": u8(pre["helds"][0]),
        "logits_chunked": f32(chk["logits"]),
        "logits_mixed": f32(mix["logits"]),
        "cache_len_mixed": i32(cache_len_mixed),
        "vanilla_logits": f32(van["logits"]),
    }
    meta = {
        "nvidia_commit": NVIDIA_COMMIT,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "variant": variant, "dms_window_size": str(WINDOW),
        "dms_paged_attention_block_size": str(BLOCK), "chunk": str(CHUNK),
        "mixed_prefill_len": str(MIXED_P), "dtype": "float32",
        "producer": "tests/reference/nvidia/make_nvidia_fixtures.py",
    }
    # One metadata key: safetensors serialises a metadata map in hash order,
    # so several keys would make the header bytes differ from run to run.
    save_file(tensors, os.path.join(folder, "expected.safetensors"),
              metadata={"fixture": json.dumps(meta, sort_keys=True)})
    os.chmod(os.path.join(folder, "expected.safetensors"), 0o644)
    return report


def generate(out):
    reports = {}
    for variant in ("adapter", "neuron"):
        reports[variant] = run_variant(variant, os.path.join(out, variant))
    return reports


def digest(folder):
    h = {}
    for root, _, files in os.walk(folder):
        for f in sorted(files):
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                h[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return h


def main():
    torch.set_num_threads(1)
    reports = generate(ARGS.out)
    print(json.dumps(reports, indent=1))
    for root, _, files in os.walk(ARGS.out):
        for f in sorted(files):
            p = os.path.join(root, f)
            print(f"{os.path.getsize(p):9d}  {p}")
    if ARGS.check_determinism:
        a, b = tempfile.mkdtemp(), tempfile.mkdtemp()
        generate(a)
        generate(b)
        da, db, dout = digest(a), digest(b), digest(ARGS.out)
        assert da == db == dout, "fixtures are not deterministic"
        print("deterministic: two more runs gave identical bytes")
        shutil.rmtree(a)
        shutil.rmtree(b)


if __name__ == "__main__":
    main()
