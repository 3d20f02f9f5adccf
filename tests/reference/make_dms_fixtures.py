#!/usr/bin/env python3
"""PyTorch oracle for the DMS training math (loss, decisions, gradients).

Why this exists
---------------
The C trainer of `dms` implements DESIGN.md section 1 (decision logits,
Gumbel/logistic relaxation, delayed-eviction attention bias, KD + compression
loss) and its backward pass.  This script re-implements the same math in plain
PyTorch (float64, every op written out, no NVIDIA code imported) for the tiny
Qwen3 model of tests/fixtures/models/tiny_qwen3/ and writes the inputs, the
intermediate tensors, the losses and the gradients of every trainable tensor
into tests/fixtures/dms/tiny_qwen3_dms.safetensors, so that the C tests can
check forward AND backward without torch in CI.

Conventions (see docs/dms_reference_notes.md for where each comes from)
----------------------------------------------------------------------
Shapes: T tokens (one packed row, batch 1), L layers, KV key/value heads,
H query heads, D head dim, V vocab.  Index t = token, h = KV head.

* Decision logit, adapter variant (notes §1):
      z[t,h] = s * (W_a @ RMSNorm(x[t]; w_n, eps))[h] - o
  x = the layer's input residual stream (before input_layernorm), W_a
  [KV, hidden] (no bias), w_n [hidden], eps = config rms_norm_eps, s = 100,
  o = 5.  One logit per KV head.
* Decision logit, neuron variant (notes §2):
      z[t,h] = s * qn[t, g(h), D-1] - o
  qn = q after q_norm, before RoPE; g(h) = h * (H/KV) is the FIRST query head
  of group h.  Channel D-1 of head g(h) is set to 0 before RoPE and set to 0
  again after RoPE (RoPE mixes channel D-1 with D/2-1, so both zeroings
  matter).  The trainable tensor is the set of q_proj rows g(h)*D + D-1,
  stored as [KV, hidden] per layer.  The row still changes head g(h)'s
  attention through q_norm's RMS denominator.
* Relaxation (notes §3):  u = (z + n) / tau, alpha = sigmoid(u), with n the
  FIXED logistic noise stored in the fixture (`noise`, [L, T, KV]), tau = 0.1.
  Hard decision d = [u > 0] (= [alpha > 0.5]).  Straight-through estimator
  d_st = d + alpha - stopgrad(alpha): forward value hard, gradient that of
  alpha.  d_st is used ONLY by the compression loss.
* Attention bias (notes §4): the decision ABOUT key j is the one EMITTED by
  token j+1 (shift by one).  For query i and key j (j <= i, same document):
      bias[i,j] = 0                          if i - j <= w
                = logsigmoid(-u[j+1,h])       if i - j >  w
  (= log(1 - alpha[j+1]), the SOFT relaxed value, not the hard decision).
  For j = T-1 there is no emitter (the reference pads with u = 0); this entry
  can never be out of window, so it does not matter.  Scores are
  q.k * D^-0.5 + bias; keys with j > i or in another document are excluded
  (-inf).  The bias is per KV head and shared by the H/KV query heads.
* Documents (notes §4): attention never crosses a document (segment_ids);
  positions restart at 0 in each document (position_ids stored).  Because
  RoPE is relative and attention is masked per document, global positions give
  the same numbers up to rounding; the script checks this.  Decisions emitted
  by the first token of a document refer to the last token of the previous
  one; they never reach any mask (cross-document keys are excluded anyway)
  but they ARE counted in mean(d) of the compression loss, as in the
  reference, which averages over every position of the row.
* Teacher: the same frozen base model with no bias (eviction off), no zeroed
  channel, original q_proj rows (for the neuron variant this is our choice;
  see notes "Differences").  Student: eviction on.
* KD loss (notes §5): per token KL(student || teacher)
      kd[t] = sum_v p_s(v) (log p_s(v) - log p_t(v))     (no temperature)
  mean over the T non-padding tokens (no padding and no EOS in this input).
* Compression loss (notes §5): max(0, target - mean_{l,t,h} d_st[l,t,h]),
  target = 1 - 1/CR = 0.5 for CR 2.  Total = KD + compression (weight 1).
* Gradients: autograd in float64 of the total loss (and of KD alone) w.r.t.
  every trainable tensor, stored as float32.

Inputs are float32 values (weights widened from the fp16 file, W_a, norm
weights and noise rounded to fp32) so an fp32 C implementation sees exactly the
same inputs; every computation is then float64.

Written tensors (all float32 unless noted):
  input_ids [T] i32, segment_ids [T] i32, position_ids [T] i32
  config    [6]  (scale, offset, tau, window, target_cr, target)
  noise [L,T,KV]
  adapter.W_a [L,KV,hidden], adapter.norm_w [L,hidden]
  adapter.z / .u / .alpha / .decision [L,T,KV]   (decision = hard 0/1)
  adapter.log_keep [L,T,KV]  = logsigmoid(-u)  (un-shifted; key j uses row j+1)
  adapter.student_logits [T,V], teacher_logits [T,V]
  adapter.kd_per_token [T]
  adapter.loss_kd, .loss_comp, .loss_total, .mean_decision  (shape [1])
  adapter.grad.W_a [L,KV,hidden], adapter.grad.norm_w [L,hidden] (total loss)
  adapter.grad_kd.W_a, adapter.grad_kd.norm_w                   (KD only)
  neuron.q_rows [L,KV,hidden], neuron.row_index [KV] i32
  neuron.z / .u / .alpha / .decision [L,T,KV], neuron.student_logits [T,V]
  neuron.kd_per_token [T], neuron.loss_kd/.loss_comp/.loss_total/.mean_decision
  neuron.grad.q_rows [L,KV,hidden], neuron.grad_kd.q_rows
(teacher_logits is shared by both variants.)

Run (CPU, a few seconds):  python3 tests/reference/make_dms_fixtures.py
It first checks the plain forward against tiny_qwen3/reference.safetensors
(and against transformers on each document separately), checks the KD
gradient by central finite differences, then writes the file and prints a
summary.  Exits non-zero on any mismatch.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
MODEL_DIR = os.path.join(ROOT, "tests", "fixtures", "models", "tiny_qwen3")
OUT_DEFAULT = os.path.join(ROOT, "tests", "fixtures", "dms",
                           "tiny_qwen3_dms.safetensors")

# DMS hyper-parameters of the fixture
SCALE = 100.0      # dms_alpha_scale
OFFSET = 5.0       # dms_initial_alpha_offset
TAU = 0.1          # dms_tau
WINDOW = 4         # dms_window_size (reference checkpoints: 512)
TARGET_CR = 2.0
TARGET = 1.0 - 1.0 / TARGET_CR
T = 48
DOC_SPLIT = 20     # tokens [0,20) = document 0, [20,48) = document 1

F64 = torch.float64


# ----------------------------------------------------------------------------
# model loading
# ----------------------------------------------------------------------------

def load_model():
    with open(os.path.join(MODEL_DIR, "config.json")) as f:
        cfg = json.load(f)
    raw = load_file(os.path.join(MODEL_DIR, "model.safetensors"))
    w = {k: v.to(torch.float32).to(F64) for k, v in raw.items()}
    return cfg, w


# ----------------------------------------------------------------------------
# plain ops (float64)
# ----------------------------------------------------------------------------

def rmsnorm(x, weight, eps):
    var = (x * x).mean(dim=-1, keepdim=True)
    return x * torch.rsqrt(var + eps) * weight


def rope_cos_sin(pos, head_dim, theta):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=F64) / head_dim))
    ang = pos.to(F64)[:, None] * inv[None, :]           # [T, D/2]
    ang = torch.cat([ang, ang], dim=-1)                 # [T, D]
    return ang.cos(), ang.sin()


def rope(x, cos, sin):
    # x [T, heads, D]; HF "rotate_half" convention (first half / second half)
    d2 = x.shape[-1] // 2
    x1, x2 = x[..., :d2], x[..., d2:]
    rot = torch.cat([-x2, x1], dim=-1)
    return x * cos[:, None, :] + rot * sin[:, None, :]


def silu(x):
    return x * torch.sigmoid(x)


def allowed_mask(seg):
    """[T,T] bool: key j visible to query i (causal and same document)."""
    n = seg.shape[0]
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    return (j <= i) & (seg[:, None] == seg[None, :])


def eviction_bias(u, window):
    """u [T, KV] relaxed logits -> additive bias [KV, T(query), T(key)].

    bias[h,i,j] = logsigmoid(-u[j+1,h]) when i - j > window, else 0.
    The last key has no emitter: pad u with 0 (as the reference does)."""
    n = u.shape[0]
    log_keep = torch.nn.functional.logsigmoid(-u)               # [T, KV]
    pad = torch.nn.functional.logsigmoid(torch.zeros_like(u[:1]))
    shifted = torch.cat([log_keep[1:], pad], dim=0)            # row j: about key j
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    out_of_window = ((i - j) > window).to(F64)                  # [T, T]
    return out_of_window[None, :, :] * shifted.t()[:, None, :]  # [KV, T, T]


# ----------------------------------------------------------------------------
# the forward pass with DMS
# ----------------------------------------------------------------------------

def forward(cfg, w, ids, pos, seg, mode, dms=None, noise=None):
    """mode: 'base' (teacher / plain model), 'adapter' or 'neuron'.

    dms (adapter): {'W_a': [L,KV,hid], 'norm_w': [L,hid]}
    dms (neuron):  {'q_rows': [L,KV,hid]}
    Returns logits [T,V] and per-layer dicts with z, u, alpha, d_hard, d_st."""
    L = cfg["num_hidden_layers"]
    H = cfg["num_attention_heads"]
    KV = cfg["num_key_value_heads"]
    D = cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    G = H // KV
    n = ids.shape[0]
    cos, sin = rope_cos_sin(pos, D, cfg["rope_theta"])
    allowed = allowed_mask(seg)
    x = w["model.embed_tokens.weight"][ids]                     # [T, hid]
    per_layer = []
    for l in range(L):
        p = "model.layers.%d." % l
        h_in = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        wq = w[p + "self_attn.q_proj.weight"]
        if mode == "neuron":
            rows = [g * G * D + D - 1 for g in range(KV)]
            wq = wq.clone()
            wq = torch.index_put(wq, (torch.tensor(rows),), dms["q_rows"][l])
        q = (h_in @ wq.t()).view(n, H, D)
        k = (h_in @ w[p + "self_attn.k_proj.weight"].t()).view(n, KV, D)
        v = (h_in @ w[p + "self_attn.v_proj.weight"].t()).view(n, KV, D)
        q = rmsnorm(q, w[p + "self_attn.q_norm.weight"], eps)
        k = rmsnorm(k, w[p + "self_attn.k_norm.weight"], eps)

        info = None
        if mode == "adapter":
            a = rmsnorm(x, dms["norm_w"][l], eps)               # before input_layernorm
            z = SCALE * (a @ dms["W_a"][l].t()) - OFFSET        # [T, KV]
        elif mode == "neuron":
            z = SCALE * q[:, 0::G, D - 1] - OFFSET              # first q head of each group
            keep = torch.ones(H, D, dtype=F64)
            keep[0::G, D - 1] = 0.0
            q = q * keep                                        # zero before RoPE
        q = rope(q, cos, sin)
        k = rope(k, cos, sin)
        if mode == "neuron":
            q = q * keep                                        # and again after RoPE

        bias = torch.zeros(KV, n, n, dtype=F64)
        if mode in ("adapter", "neuron"):
            u = (z + noise[l]) / TAU
            alpha = torch.sigmoid(u)
            d_hard = (u > 0).to(F64)
            d_st = d_hard + alpha - alpha.detach()
            bias = eviction_bias(u, WINDOW)
            info = dict(z=z, u=u, alpha=alpha, d_hard=d_hard, d_st=d_st,
                        log_keep=torch.nn.functional.logsigmoid(-u))

        # attention, GQA: query head qh uses KV head qh // G
        outs = []
        for qh in range(H):
            kh = qh // G
            s = (q[:, qh, :] @ k[:, kh, :].t()) * (D ** -0.5) + bias[kh]
            s = s.masked_fill(~allowed, float("-inf"))
            pr = torch.softmax(s, dim=-1)
            outs.append(pr @ v[:, kh, :])
        att = torch.cat(outs, dim=-1)                           # [T, H*D]
        x = x + att @ w[p + "self_attn.o_proj.weight"].t()
        h2 = rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        mlp = silu(h2 @ w[p + "mlp.gate_proj.weight"].t()) * (h2 @ w[p + "mlp.up_proj.weight"].t())
        x = x + mlp @ w[p + "mlp.down_proj.weight"].t()
        per_layer.append(info)
    x = rmsnorm(x, w["model.norm.weight"], eps)
    logits = x @ w["lm_head.weight"].t()
    return logits, per_layer


def kd_per_token(student_logits, teacher_logits):
    ls = torch.log_softmax(student_logits, dim=-1)
    lt = torch.log_softmax(teacher_logits, dim=-1)
    return (ls.exp() * (ls - lt)).sum(dim=-1)


def losses(student_logits, teacher_logits, per_layer):
    kd_tok = kd_per_token(student_logits, teacher_logits)
    kd = kd_tok.mean()                                  # all T tokens are non-pad
    d = torch.stack([pl["d_st"] for pl in per_layer])   # [L, T, KV]
    mean_d = d.mean()
    comp = torch.clamp(TARGET - mean_d, min=0.0)
    return kd, comp, kd + comp, kd_tok, mean_d


# ----------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------

def check_against_hf_reference(cfg, w):
    ref = load_file(os.path.join(MODEL_DIR, "reference.safetensors"))
    ids = ref["input_ids"][0].long()
    n = ids.shape[0]
    logits, _ = forward(cfg, w, ids, torch.arange(n), torch.zeros(n, dtype=torch.long), "base")
    err = (logits - ref["logits"][0].to(F64)).abs().max().item()
    print("plain forward vs tiny_qwen3/reference.safetensors: max|dlogits| = %.2e" % err)
    if err > 1e-4:
        sys.exit("FAIL: plain forward does not reproduce the reference logits")


def check_teacher_with_transformers(teacher_logits, ids, seg):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32,
                                             attn_implementation="eager")
    m.eval()
    err = 0.0
    with torch.no_grad():
        for s in seg.unique().tolist():
            idx = (seg == s).nonzero().flatten()
            out = m(ids[idx][None, :]).logits[0].to(F64)
            err = max(err, (out - teacher_logits[idx]).abs().max().item())
    print("packed teacher vs transformers run per document:  max|dlogits| = %.2e" % err)
    if err > 1e-4:
        sys.exit("FAIL: packed teacher does not match per-document transformers runs")


def check_bias_by_loops():
    """Independent element-by-element statement of the mask convention."""
    g = torch.Generator().manual_seed(1)
    n, kv, win = 9, 2, 2
    u = 3.0 * torch.randn(n, kv, generator=g, dtype=F64)
    b = eviction_bias(u, win)
    for h in range(kv):
        for i in range(n):
            for j in range(n):
                want = 0.0
                if i - j > win:                    # key j left the window of query i
                    a = 1.0 / (1.0 + np.exp(-u[j + 1, h].item()))  # emitted by token j+1
                    want = np.log(1.0 - a)
                if abs(b[h, i, j].item() - want) > 1e-12:
                    sys.exit("FAIL: eviction_bias convention at h=%d i=%d j=%d" % (h, i, j))


def fd_check(fn, param, name, picks, eps=1e-6):
    """Central finite differences of a smooth scalar fn against autograd."""
    param = param.detach().clone().requires_grad_(True)
    val = fn(param)
    (g,) = torch.autograd.grad(val, param)
    worst = 0.0
    for idx in picks:
        pp = param.detach().clone(); pp[idx] += eps
        pm = param.detach().clone(); pm[idx] -= eps
        fd = (fn(pp) - fn(pm)).item() / (2 * eps)
        an = g[idx].item()
        worst = max(worst, abs(fd - an) / max(1e-8, abs(an), abs(fd)))
    print("finite-difference check of d(KD)/d(%s): worst rel err %.2e over %d entries"
          % (name, worst, len(picks)))
    if worst > 1e-4:
        sys.exit("FAIL: autograd KD gradient disagrees with finite differences")


# ----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT_DEFAULT)
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    cfg, w = load_model()
    L = cfg["num_hidden_layers"]
    KV = cfg["num_key_value_heads"]
    H = cfg["num_attention_heads"]
    D = cfg["head_dim"]
    hid = cfg["hidden_size"]
    V = cfg["vocab_size"]
    G = H // KV

    check_against_hf_reference(cfg, w)
    check_bias_by_loops()

    # fixed inputs ----------------------------------------------------------
    gen = torch.Generator().manual_seed(20250607)  # chosen: all |z+n| >= 0.1
    ids = torch.randint(0, V, (T,), generator=gen)
    seg = (torch.arange(T) >= DOC_SPLIT).long()
    pos = torch.cat([torch.arange(DOC_SPLIT), torch.arange(T - DOC_SPLIT)])

    # logistic noise = difference of two standard Gumbels, rounded to fp32
    def gumbel(shape):
        uni = torch.rand(shape, generator=gen, dtype=F64).clamp(1e-12, 1 - 1e-12)
        return -torch.log(-torch.log(uni))
    noise = (gumbel((L, T, KV)) - gumbel((L, T, KV))).to(torch.float32).to(F64)

    W_a = (0.02 * torch.randn(L, KV, hid, generator=gen, dtype=F64)).to(torch.float32).to(F64)
    norm_w = (1.0 + 0.05 * torch.randn(L, hid, generator=gen, dtype=F64)).to(torch.float32).to(F64)
    rows = [g * G * D + D - 1 for g in range(KV)]
    q_rows = (0.01 * torch.randn(L, KV, hid, generator=gen, dtype=F64)).to(torch.float32).to(F64)

    # teacher ---------------------------------------------------------------
    with torch.no_grad():
        teacher, _ = forward(cfg, w, ids, pos, seg, "base")
        teacher_global, _ = forward(cfg, w, ids, torch.arange(T), seg, "base")
    perr = (teacher - teacher_global).abs().max().item()
    print("per-document vs global positions (teacher):       max|dlogits| = %.2e" % perr)
    if perr > 1e-9:
        sys.exit("FAIL: position convention changes the result")
    check_teacher_with_transformers(teacher, ids, seg)

    out = {
        "input_ids": ids.to(torch.int32),
        "segment_ids": seg.to(torch.int32),
        "position_ids": pos.to(torch.int32),
        "config": torch.tensor([SCALE, OFFSET, TAU, WINDOW, TARGET_CR, TARGET], dtype=torch.float32),
        "noise": noise.to(torch.float32),
        "teacher_logits": teacher.to(torch.float32),
    }
    summary = {}

    def run_variant(name, params):
        """params: dict name -> tensor (float64, requires grad)."""
        logits, pl = forward(cfg, w, ids, pos, seg, name, params, noise)
        kd, comp, total, kd_tok, mean_d = losses(logits, teacher, pl)
        keys = list(params)
        g_total = torch.autograd.grad(total, [params[k] for k in keys], retain_graph=True)
        g_kd = torch.autograd.grad(kd, [params[k] for k in keys])
        st = lambda f: torch.stack([p[f] for p in pl]).detach()
        zn = st("z") + noise
        margin = zn.abs().min().item()
        pre = name + "."
        out.update({
            pre + "z": st("z").float(), pre + "u": st("u").float(),
            pre + "alpha": st("alpha").float(), pre + "decision": st("d_hard").float(),
            pre + "student_logits": logits.detach().float(),
            pre + "kd_per_token": kd_tok.detach().float(),
            pre + "loss_kd": kd.detach().reshape(1).float(),
            pre + "loss_comp": comp.detach().reshape(1).float(),
            pre + "loss_total": total.detach().reshape(1).float(),
            pre + "mean_decision": mean_d.detach().reshape(1).float(),
        })
        if name == "adapter":
            out[pre + "log_keep"] = st("log_keep").float()
        for k, gt, gk in zip(keys, g_total, g_kd):
            out[pre + k] = params[k].detach().float()
            out[pre + "grad." + k] = gt.float()
            out[pre + "grad_kd." + k] = gk.float()
        summary[name] = dict(kd=kd.item(), comp=comp.item(), total=total.item(),
                             mean_d=mean_d.item(), margin=margin,
                             per_layer=[p["d_hard"].mean().item() for p in pl],
                             gnorm={k: g.norm().item() for k, g in zip(keys, g_total)},
                             gcomp={k: (a - b).norm().item()
                                    for k, a, b in zip(keys, g_total, g_kd)})
        if margin < 5e-2:
            sys.exit("FAIL: %s: |z + n| = %.3g too close to 0; hard decisions would be fragile"
                     % (name, margin))
        if abs(TARGET - mean_d.item()) < 1e-2:
            sys.exit("FAIL: %s: compression loss at its kink" % name)
        return params

    # adapter variant -------------------------------------------------------
    pa = run_variant("adapter", {"W_a": W_a.clone().requires_grad_(True),
                                 "norm_w": norm_w.clone().requires_grad_(True)})

    def kd_of_Wa(Wa):
        lg, _ = forward(cfg, w, ids, pos, seg, "adapter", {"W_a": Wa, "norm_w": norm_w}, noise)
        return kd_per_token(lg, teacher).mean()
    fd_check(kd_of_Wa, W_a, "W_a", [(0, 0, 3), (0, 1, 17), (1, 0, 40), (1, 1, 63)])

    # neuron variant --------------------------------------------------------
    run_variant("neuron", {"q_rows": q_rows.clone().requires_grad_(True)})
    out["neuron.row_index"] = torch.tensor(rows, dtype=torch.int32)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    out = {k: v.contiguous() for k, v in out.items()}
    # one metadata key only: safetensors writes a multi-key dict in hash order,
    # which would make reruns differ byte-wise
    save_file(out, args.out, metadata={"generator": "tests/reference/make_dms_fixtures.py"})

    # summary ---------------------------------------------------------------
    print("\nwrote %s (%d bytes)" % (args.out, os.path.getsize(args.out)))
    print("T=%d (documents [0,%d) [%d,%d)), window=%d, tau=%g, scale=%g, offset=%g, "
          "CR=%g (target %.3f)" % (T, DOC_SPLIT, DOC_SPLIT, T, WINDOW, TAU, SCALE,
                                   OFFSET, TARGET_CR, TARGET))
    for name, s in summary.items():
        print("%-8s kd=%.9g comp=%.9g total=%.9g mean(d)=%.6f per-layer=%s "
              "min|z+n|=%.3g |grad|=%s |grad_comp|=%s" % (
                  name, s["kd"], s["comp"], s["total"], s["mean_d"],
                  ["%.4f" % x for x in s["per_layer"]], s["margin"],
                  {k: "%.4g" % v for k, v in s["gnorm"].items()},
                  {k: "%.4g" % v for k, v in s["gcomp"].items()}))
    for k in sorted(out):
        print("  %-28s %-8s %s" % (k, str(out[k].dtype).replace("torch.", ""),
                                    list(out[k].shape)))


if __name__ == "__main__":
    main()
