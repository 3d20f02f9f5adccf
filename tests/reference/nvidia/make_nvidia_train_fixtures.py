#!/usr/bin/env python3
"""Training fixtures from NVIDIA's own DMS code, run on the CPU.

Why this exists
---------------
tests/reference/make_dms_fixtures.py checks our trainer against a PyTorch
re-statement of the method written here, which can share our mistakes.
This script instead runs NVIDIA Model-Optimizer's `experimental/dms`
training path itself -- their Qwen3 DMS model in training mode, their
gating with noise (`core.get_gating_with_noise` inside
`core.prepare_attention_input`), their training attention
(`attention.dms_attn_train_mode` with its `score_mod`), their noise
(`engine.get_dms_noise`), their schedule (`engine.dms_schedule`), their
distillation loss and their compression loss, all driven by their
`engine.distillation_forward` with the student as its own teacher, exactly
as their trainer calls it -- and records the student logits, both losses
and every gradient of the trainable tensors (the adapter heads).
tests/test_nvidia_train.c runs our trainer on the same rows with the same
noise and must match.  NVIDIA's code is NOT part of this repository: the
script imports it from a scratch folder given on the command line.

What the fixture covers
-----------------------
* Model: the adapter model of tests/fixtures/nvidia/adapter (made by
  make_nvidia_fixtures.py with NVIDIA's save path: Qwen3, 2 layers, hidden
  64, 4 query heads, 2 KV heads, head_dim 16, vocab 512, non-zero adapter
  heads), loaded with NVIDIA's `from_pretrained`; the DMS window is set to
  WINDOW (config override, as their trainer passes `dms_*` keys).
* Rows in `reference` packing: B = 2 rows of T = 24 tokens, documents
  concatenated (each ending in EOS_ID), each row starting at a document
  start, the overflow of the last document dropped, no document mask,
  positions 0..T-1 (NVIDIA passes no position ids and an all-true
  attention mask).  EOS tokens sit inside both rows, so the KD mask
  (NVIDIA drops positions whose input is EOS) matters.
* Both `dms_alpha_per` modes, `head` and `layer`, each with its own noise.
* Compression target between the two rows' flagged fractions: one row is
  clamped at zero and the other is not, so per-row clamping (NVIDIA's) and
  clamping the batch mean give different losses and gradients.
* The noise is NVIDIA's own draw (`get_dms_noise`, two bf16 Gumbels
  subtracted), stored as float32 (exact: the values are bf16).  The step
  that seeds it is the first one >= 1 whose every decision has a margin
  |z + n| >= MARGIN in the float64 run, so that float32 decides the same.

Precision
---------
The recorded values come from a float64 run of NVIDIA's code (patches 4
below).  Float32 steps that stay inside NVIDIA's code: the distillation
loss casts logits to fp32 (`.float()`) and the flagged fraction is
`.float().mean()`; both leave ~1e-7 relative.  The same run in float32
(NVIDIA's code as it is, our weights) is compared with the float64 run and
the differences are stored in the metadata (`fp32_floor`): that is the
precision floor of any fp32 implementation, NVIDIA's included.

Versions used for the committed fixture
---------------------------------------
* NVIDIA/Model-Optimizer commit a2fbac7bad8ab446d3f8783dadb0c3366eb0ad73,
  folder experimental/dms (pyproject pins transformers==4.57.3).
* transformers 4.57.3, torch 2.15.0 (PyPI wheel, run on the CPU), numpy,
  safetensors 0.8.0, Python 3.11.

How to regenerate
-----------------
    # NVIDIA's code: a snapshot of github.com/NVIDIA/Model-Optimizer (git
    # clone, or any mirror), unpacked OUTSIDE this repository
    git --git-dir=<mirror of NVIDIA/Model-Optimizer> archive <commit> \
        experimental/dms | tar -x -C /tmp/nvdms
    # Python packages into their own folder (nothing installed system-wide,
    # nothing into this repository)
    pip install --target /tmp/nvpy torch transformers==4.57.3 safetensors numpy
    python3 tests/reference/nvidia/make_nvidia_train_fixtures.py \
        --nvidia /tmp/nvdms/experimental/dms --pydeps /tmp/nvpy \
        [--out tests/fixtures/nvidia/train_adapter.safetensors] [--check-determinism]
Run it from the repository root or anywhere (paths default to this
checkout).  The output is byte-for-byte deterministic on one machine.

Runtime patches (NVIDIA's files are not edited; semantics unchanged)
--------------------------------------------------------------------
1. `torch.compile` is replaced by the identity before NVIDIA's modules are
   imported (their decorated functions then run eagerly).
2. `torch.random.fork_rng` forks only the CPU generator: NVIDIA calls it
   with the data's device, and torch's default device type for forking is
   CUDA ("Found no NVIDIA driver").  The seed is NVIDIA's; a GPU would draw
   different noise from it, which is why the fixture stores the noise.
3. FlexAttention has no backward on the CPU: `dms.attention.flex_attention`
   is replaced by its dense definition -- q k^T * scale, NVIDIA's own
   `score_mod` applied element-wise on broadcast (batch, head, q, k) index
   grids, softmax, times v (grouped-query heads share their KV page, as
   `enable_gqa` does).  Its forward equals the real flex_attention.
4. float64: transformers' Qwen3RMSNorm computes in float32 and its rotary
   embedding builds cos/sin in float32; for float64 inputs both are patched
   to compute in float64 (inverse frequencies theta^(-2i/D) in float64).
   Float32 inputs run transformers' code unchanged.
5. Recorders (no change to values): a forward hook on the model keeps the
   student's logits; `engine.get_dms_noise` is wrapped to keep its noise
   (or to hand back the stored noise for the float32 floor run);
   `modeling.dms_attention` is wrapped to keep each layer's relaxed logits
   u = (z + n) / tau, for the margins and the per-row flagged fractions.

Fixture layout (tests/fixtures/nvidia/train_adapter.safetensors)
----------------------------------------------------------------
float32 unless noted; L = 2 layers, KV = 2, d = 64, V = 512.
  input_ids        [B, T] int32
  adapter.W_a      [L, KV, d]  dms_proj_alpha.weight of each layer (as in
                               tests/fixtures/nvidia/adapter/model.safetensors)
  adapter.norm_w   [L, d]      dms_proj_alpha_norm.weight
  config           [8]         window, alpha_scale, alpha_offset, tau,
                               eos_id, vocab_chunk, B, T
and per mode M in {head, layer}:
  M.noise          [B, L, T, KV] NVIDIA's noise, in our layout
  M.target_cr      [1]  final CR of NVIDIA's schedule (reached at the step)
  M.target         [1]  compression target 1 - 1/CR (float64 value rounded)
  M.logits         [B, T, V]  student logits
  M.loss_kd        [1]  NVIDIA's distil_loss
  M.loss_comp      [1]  NVIDIA's dms_loss
  M.loss           [1]  their sum
  M.frac_row       [B]  each row's flagged fraction (mean over L, KV, T)
  M.grad.W_a       [L, KV, d]  d(loss)/d dms_proj_alpha.weight
  M.grad.norm_w    [L, d]      d(loss)/d dms_proj_alpha_norm.weight
The header metadata key "fixture" (one JSON string) holds the NVIDIA
commit, versions, the noise steps, margins and the fp32 floor per quantity.
"""

import argparse
import functools
import hashlib
import json
import os
import sys
import tempfile
import types
import warnings

NVIDIA_COMMIT = "a2fbac7bad8ab446d3f8783dadb0c3366eb0ad73"

B = 2
T = 24
WINDOW = 4
EOS_ID = 3
VOCAB_CHUNK = 200          # NVIDIA's process_vocab_using_chunk: 3 chunks, the last partial
MARGIN = 0.05              # min |z + n| over every decision of the chosen noise
DOC_LENGTHS = ([7, 10, 12], [13, 5, 20])  # per row; each document ends in EOS
IDS_SEED = 2468
MODES = ("head", "layer")


def parse_args():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nvidia", required=True,
                   help="path of NVIDIA's experimental/dms folder (scratch copy)")
    p.add_argument("--pydeps", default=None,
                   help="pip --target folder holding torch / transformers==4.57.3")
    p.add_argument("--model", default=os.path.join(repo, "tests", "fixtures", "nvidia", "adapter"))
    p.add_argument("--out", default=os.path.join(repo, "tests", "fixtures", "nvidia",
                                                 "train_adapter.safetensors"))
    p.add_argument("--check-determinism", action="store_true",
                   help="generate once more into a scratch file and compare bytes")
    return p.parse_args()


ARGS = parse_args()
if ARGS.pydeps:
    sys.path.insert(0, os.path.abspath(ARGS.pydeps))
NV = os.path.abspath(ARGS.nvidia)
sys.path.insert(1, NV)  # NVIDIA's modules import as `dms.*` / `models.*`
os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import transformers.models.qwen3.modeling_qwen3 as hf_qwen3  # noqa: E402
from safetensors.torch import save_file  # noqa: E402


# --- patch 1: torch.compile -> identity (before NVIDIA's imports) ----------
def _no_compile(fn=None, *args, **kwargs):
    return fn if fn is not None else (lambda f: f)


torch.compile = _no_compile

# --- patch 2: fork only the CPU generator ----------------------------------
_orig_fork_rng = torch.random.fork_rng


def _cpu_fork_rng(devices=None, enabled=True, **kwargs):
    return _orig_fork_rng(devices=[], enabled=enabled)


torch.random.fork_rng = _cpu_fork_rng

import dms.attention as nv_attention  # noqa: E402
import dms.training.engine as nv_engine  # noqa: E402
import models.qwen3.modeling_qwen3_dms as nv_modeling  # noqa: E402
from models.qwen3.configuration_qwen3_dms import Qwen3ConfigDMS  # noqa: E402
from models.qwen3.modeling_qwen3_dms import Qwen3ForCausalLMDMS  # noqa: E402


# --- patch 3: dense flex_attention (same forward, with a CPU backward) -----
def _dense_flex_attention(query, key, value, score_mod=None, scale=None, enable_gqa=False, **kw):
    assert not kw, f"unexpected flex_attention arguments {list(kw)}"
    PB, G, Tq, D = query.shape
    assert key.shape[1] == 1 and enable_gqa, "DMS training pages have one KV head"
    s = torch.matmul(query, key.transpose(-1, -2)) * scale  # [PB, G, Tq, Tk]
    Tk = key.shape[2]
    b = torch.arange(PB).view(PB, 1, 1, 1)
    h = torch.arange(G).view(1, G, 1, 1)
    qi = torch.arange(Tq).view(1, 1, Tq, 1)
    ki = torch.arange(Tk).view(1, 1, 1, Tk)
    s = score_mod(s, b, h, qi, ki)
    return torch.matmul(torch.softmax(s, dim=-1), value)


nv_attention.flex_attention = _dense_flex_attention

# --- patch 4: float64 RMSNorm and rotary embedding -------------------------
_orig_rms_forward = hf_qwen3.Qwen3RMSNorm.forward
_orig_rope_forward = hf_qwen3.Qwen3RotaryEmbedding.forward


def _rms_forward(self, x):
    if x.dtype != torch.float64:
        return _orig_rms_forward(self, x)
    var = x.pow(2).mean(-1, keepdim=True)
    return self.weight * (x * torch.rsqrt(var + self.variance_epsilon))


@torch.no_grad()
def _rope_forward(self, x, position_ids):
    if x.dtype != torch.float64:
        return _orig_rope_forward(self, x, position_ids)
    assert self.rope_type == "default" and self.attention_scaling == 1.0
    cfg = self.config
    dim = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    freqs = position_ids[:, :, None].to(torch.float64) * inv[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


hf_qwen3.Qwen3RMSNorm.forward = _rms_forward
hf_qwen3.Qwen3RotaryEmbedding.forward = _rope_forward


# --- patch 5: recorders ------------------------------------------------------
class Rec:
    inject = None      # noise handed back instead of a fresh draw
    noise = None       # last noise drawn or injected
    u = {}             # layer -> relaxed logits [B, KV, T] of the student pass
    logits = None      # student logits [B, T, V]


_orig_get_dms_noise = nv_engine.get_dms_noise


def _noise_recorder(dist, device, dms_state):
    if Rec.inject is not None:
        n = Rec.inject.clone()
    else:
        n = _orig_get_dms_noise(dist=dist, device=device, dms_state=dms_state)
    Rec.noise = n.detach().clone()
    return n


nv_engine.get_dms_noise = _noise_recorder
_orig_dms_attention = nv_modeling.dms_attention


def _attention_recorder(**kw):
    u = kw["decision_logits"]
    if not bool((u == -1000.0).all()):  # the teacher pass forces -1000
        Rec.u[kw["layer_idx"]] = u.detach().clone()
    return _orig_dms_attention(**kw)


nv_modeling.dms_attention = _attention_recorder


def _logits_hook(module, args, kwargs, output):
    st = kwargs.get("dms_state")
    if st is not None and not st.dms_teacher_mode:
        Rec.logits = output.logits.detach().clone()


# --------------------------------------------------------------------------
def make_rows():
    """Rows in reference packing: documents (random ids, EOS last) concatenated
    from a document start, the last document cut at T."""
    rng = np.random.Generator(np.random.PCG64(IDS_SEED))
    rows = []
    for lengths in DOC_LENGTHS:
        row = []
        for n in lengths:
            doc = rng.integers(0, 512, size=n)
            doc[doc == EOS_ID] = EOS_ID + 1
            doc[-1] = EOS_ID
            row.extend(int(v) for v in doc)
        assert len(row) >= T
        rows.append(row[:T])
    ids = np.array(rows, dtype=np.int64)
    assert all((ids[b, :-1] == EOS_ID).any() for b in range(B)), "every row holds an EOS"
    return ids


def load(dtype, per):
    cfg = Qwen3ConfigDMS.from_pretrained(ARGS.model)
    assert cfg.dms_separate_alpha, "the adapter model is needed"
    cfg.dms_window_size = WINDOW
    cfg.dms_alpha_per = per
    model = Qwen3ForCausalLMDMS.from_pretrained(ARGS.model, config=cfg, dtype=dtype)
    nv_engine._configure_gradients(model)  # NVIDIA's: only dms_proj_alpha* train
    model.train()
    model.register_forward_hook(_logits_hook, with_kwargs=True)
    return model


def nvidia_step(model, ids, step, final_cr):
    """One call of NVIDIA's distillation_forward + backward; returns values."""
    Rec.u = {}
    Rec.logits = None
    model.zero_grad(set_to_none=True)
    schedule = functools.partial(nv_engine.dms_schedule, training_args=None,
                                 dms_initial_cr=1.0, dms_final_cr=final_cr, dms_final_step=1)
    res = nv_engine.distillation_forward(
        student_model=model, teacher_model=None, input_ids=torch.from_numpy(ids),
        attention_mask=torch.ones(ids.shape, dtype=torch.bool), dms_schedule=schedule,
        process_index=0, tokenizer=types.SimpleNamespace(eos_token_id=EOS_ID),
        student_is_teacher=True, current_step=step, grad_acc_step=0,
        process_vocab_using_chunk=VOCAB_CHUNK, forward_fn_kwargs_student={},
        forward_fn_kwargs_teacher={})
    res["loss"].backward()
    L = model.config.num_hidden_layers
    att = [model.model.layers[l].self_attn for l in range(L)]
    u = torch.stack([Rec.u[l] for l in range(L)], 0)  # [L, B, KV, T]
    tau = model.config.dms_tau
    return dict(
        kd=float(res["distil_loss"]), comp=float(res["dms_loss"]), loss=float(res["loss"]),
        target=schedule(step)[0], closed=float(res["dms_closed_frac"]),
        logits=Rec.logits.double().numpy(),
        g_wa=torch.stack([a.dms_proj_alpha.weight.grad for a in att]).double().numpy(),
        g_norm=torch.stack([a.dms_proj_alpha_norm.weight.grad for a in att]).double().numpy(),
        noise=Rec.noise.float(),
        frac_row=(u > 0).double().mean(dim=(0, 2, 3)).numpy(),
        margin=float((u.double() * tau).abs().min()),
        hard=(u > 0).numpy())


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def run_mode(per, ids, report):
    m64 = load(torch.float64, per)
    # the first noise step >= 1 with a margin and rows that differ
    for step in range(1, 400):
        r = nvidia_step(m64, ids, step, 2.0)
        fr = sorted(r["frac_row"])
        if r["margin"] >= MARGIN and fr[1] - fr[0] >= 2.5 / (2 * 2 * T):
            break
    else:
        raise SystemExit(f"{per}: no noise step with margin {MARGIN}")
    lo, hi = sorted(r["frac_row"])
    target = lo + 0.75 * (hi - lo)  # one row clamped at 0, the other not
    final_cr = float(np.float32(1.0 / (1.0 - target)))  # a float32 CR: the C config holds one
    r = nvidia_step(m64, ids, step, final_cr)
    assert abs(r["target"] - (1 - 1 / final_cr)) < 1e-7
    want_comp = float(np.mean([max(0.0, r["target"] - f) for f in r["frac_row"]]))
    assert abs(r["comp"] - want_comp) < 1e-6 and r["comp"] > 0, (r["comp"], want_comp)
    assert abs(r["closed"] - r["frac_row"].mean()) < 1e-6
    # the float32 floor: NVIDIA's code in float32 with the same noise
    m32 = load(torch.float32, per)
    Rec.inject = r["noise"].to(torch.bfloat16)
    r32 = nvidia_step(m32, ids, step, final_cr)
    Rec.inject = None
    assert (r32["hard"] == r["hard"]).all(), "float32 decides otherwise"
    floor = dict(logits=rel(r32["logits"], r["logits"]), loss_kd=rel(r32["kd"], r["kd"]),
                 loss_comp=rel(r32["comp"], r["comp"]), loss=rel(r32["loss"], r["loss"]),
                 grad_W_a=rel(r32["g_wa"], r["g_wa"]), grad_norm_w=rel(r32["g_norm"], r["g_norm"]),
                 grad_W_a_per_layer=[rel(r32["g_wa"][l], r["g_wa"][l]) for l in range(2)],
                 grad_norm_w_per_layer=[rel(r32["g_norm"][l], r["g_norm"][l]) for l in range(2)])
    report[per] = dict(noise_step=step, margin=r["margin"], frac_row=r["frac_row"].tolist(),
                       target=r["target"], target_cr=final_cr, kd=r["kd"], comp=r["comp"],
                       fp32_floor=floor)
    f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    noise = r["noise"].permute(1, 0, 3, 2).numpy()  # [L, B, KV, T] -> [B, L, T, KV]
    out = {
        f"{per}.noise": f32(noise),
        f"{per}.target_cr": f32([final_cr]),
        f"{per}.target": f32([r["target"]]),
        f"{per}.logits": f32(r["logits"]),
        f"{per}.loss_kd": f32([r["kd"]]),
        f"{per}.loss_comp": f32([r["comp"]]),
        f"{per}.loss": f32([r["loss"]]),
        f"{per}.frac_row": f32(r["frac_row"]),
        f"{per}.grad.W_a": f32(r["g_wa"]),
        f"{per}.grad.norm_w": f32(r["g_norm"]),
    }
    return out, m64


def generate(path):
    torch.manual_seed(0)
    ids = make_rows()
    report = {}
    tensors = {"input_ids": torch.from_numpy(ids.astype(np.int32))}
    for per in MODES:
        out, model = run_mode(per, ids, report)
        tensors.update(out)
    L = model.config.num_hidden_layers
    att = [model.model.layers[l].self_attn for l in range(L)]
    wa = [a.dms_proj_alpha.weight.detach() for a in att]
    nw = [a.dms_proj_alpha_norm.weight.detach() for a in att]
    tensors["adapter.W_a"] = torch.stack(wa).float()
    tensors["adapter.norm_w"] = torch.stack(nw).float()
    c = model.config
    tensors["config"] = torch.tensor([WINDOW, c.dms_alpha_scale, c.dms_initial_alpha_offset,
                                      c.dms_tau, EOS_ID, VOCAB_CHUNK, B, T], dtype=torch.float32)
    meta = {
        "nvidia_commit": NVIDIA_COMMIT, "torch": torch.__version__,
        "transformers": transformers.__version__, "dtype": "float64 run, stored as float32",
        "producer": "tests/reference/nvidia/make_nvidia_train_fixtures.py",
        "model": "tests/fixtures/nvidia/adapter", "packing": "reference",
        "doc_lengths": DOC_LENGTHS, "report": report,
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, path,
              metadata={"fixture": json.dumps(meta, sort_keys=True)})
    os.chmod(path, 0o644)
    return report


def main():
    torch.set_num_threads(1)
    report = generate(ARGS.out)
    print(json.dumps(report, indent=1))
    print(f"{os.path.getsize(ARGS.out):9d}  {ARGS.out}")
    if ARGS.check_determinism:
        tmp = os.path.join(tempfile.mkdtemp(), "again.safetensors")
        generate(tmp)
        digest = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()  # noqa: E731
        assert digest(tmp) == digest(ARGS.out), "fixture is not deterministic"
        print("deterministic: a second run gave identical bytes")


if __name__ == "__main__":
    main()
