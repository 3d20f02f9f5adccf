#!/usr/bin/env python3
"""Peer of `dms bench attention`: PyTorch's plain causal SDPA, forward and backward.

Not `dms` code and not a test.  Issue 14 asks that our DMS training attention
(forward plus backward) come within 1.3x of cuDNN's plain causal scaled
dot-product attention at the same shape.  This script times that reference:
torch.nn.functional.scaled_dot_product_attention in bf16, causal, grouped-query
(enable_gqa, else K and V repeated per group before the timed region), one row
of --tokens tokens, each backend that PyTorch offers on the device (cuDNN,
flash, efficient) pinned with torch.nn.attention.sdpa_kernel.  A backend that
refuses the shape is recorded with its error, not skipped silently.

Timing: CUDA events around the forward, and around the backward of
sum(out * dout); one warm-up, then --steps repetitions, medians reported.
FLOPs are counted as `dms bench attention` counts them (forward
4 * pairs * heads * head_dim, backward twice that; pairs = T (T + 1) / 2).
Also recorded: one bf16 8192^3 matrix product (the device's measured ceiling,
docs/gpu.md) unless --no-gemm.

Usage: python3 bench/sdpa_peer.py --tokens 32768 --heads 32 --kv-heads 8 \
           --head-dim 128 --out OUTDIR
On a machine without CUDA it runs on the CPU in fp32 (a dry run of the script
at a small shape, not a measurement).
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed repetitions after one warm-up")
    p.add_argument("--backends", default="cudnn,flash,efficient",
                   help="comma list of cudnn, flash, efficient, math")
    p.add_argument("--no-gemm", action="store_true", help="skip the bf16 matrix-product ceiling")
    p.add_argument("--out", default=".", help="folder for the JSON result")
    a = p.parse_args(argv)
    if a.tokens < 16 or a.heads < 1 or a.kv_heads < 1 or a.heads % a.kv_heads or a.head_dim < 2 or a.steps < 1:
        p.error("need --tokens >= 16, --heads a positive multiple of --kv-heads, --head-dim >= 2, --steps >= 1")
    return a


def timer(torch, cuda):
    """A start/stop pair that returns seconds: CUDA events on the GPU, the host clock on the CPU."""
    if cuda:
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        return (lambda: s.record()), (lambda: (e.record(), e.synchronize(), s.elapsed_time(e) / 1e3)[2])
    t = [0.0]
    return (lambda: t.__setitem__(0, time.perf_counter())), (lambda: time.perf_counter() - t[0])


def time_sdpa(torch, a, backend, cuda):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F
    kind = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[backend]
    dev, dt = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    g = torch.Generator(device=dev).manual_seed(1234)
    T, H, KV, D = a.tokens, a.heads, a.kv_heads, a.head_dim
    q = torch.rand(1, H, T, D, device=dev, dtype=dt, generator=g).sub_(0.5).requires_grad_()
    k = torch.rand(1, KV, T, D, device=dev, dtype=dt, generator=g).sub_(0.5).requires_grad_()
    v = torch.rand(1, KV, T, D, device=dev, dtype=dt, generator=g).sub_(0.5).requires_grad_()
    dout = torch.rand(1, H, T, D, device=dev, dtype=dt, generator=g).sub_(0.5)
    gqa = "enable_gqa"
    start, stop = timer(torch, cuda)

    def forward():
        if gqa == "enable_gqa":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return F.scaled_dot_product_attention(q, kx, vx, is_causal=True)

    fwd, bwd = [], []
    with sdpa_kernel([kind]):
        try:
            forward()
        except RuntimeError as e:  # this backend has no GQA: repeat K, V outside the timed region
            gqa = f"repeated K/V ({str(e).splitlines()[0][:160]})"
            kx = k.detach().repeat_interleave(H // KV, dim=1).requires_grad_()
            vx = v.detach().repeat_interleave(H // KV, dim=1).requires_grad_()
            forward()
        for s in range(-1, a.steps):
            for t in (q, k, v):
                t.grad = None
            start()
            out = forward()
            f = stop()
            start()
            out.backward(dout)
            b = stop()
            if s >= 0:
                fwd.append(f)
                bwd.append(b)
    if not torch.isfinite(q.grad).all():  # q is a leaf on both paths: a broken kernel is no measurement
        raise RuntimeError("non-finite gradient")
    pairs = T * (T + 1) / 2
    flops = 4 * pairs * H * D
    fm, bm = statistics.median(fwd), statistics.median(bwd)
    return {"backend": backend, "gqa": gqa, "forward_s_median": fm, "backward_s_median": bm,
            "fwd_bwd_s_median": fm + bm, "forward_tflops": flops / fm / 1e12,
            "backward_tflops": 2 * flops / bm / 1e12, "forward_s": fwd, "backward_s": bwd}


def gemm_ceiling(torch):
    n = 8192
    g = torch.Generator(device="cuda").manual_seed(7)
    x = torch.rand(n, n, device="cuda", dtype=torch.bfloat16, generator=g)
    y = torch.rand(n, n, device="cuda", dtype=torch.bfloat16, generator=g)
    start, stop = timer(torch, True)
    ts = []
    for i in range(13):
        start()
        torch.mm(x, y)
        if i >= 3:
            ts.append(stop())
        else:
            stop()
    m = statistics.median(ts)
    return {"shape": [n, n, n], "dtype": "bf16", "median_s": m, "tflops": 2 * n ** 3 / m / 1e12}


def main(argv=None):
    a = parse_args(argv)
    import torch
    cuda = torch.cuda.is_available()
    res = {"benchmark": "PyTorch SDPA, plain causal attention, forward and backward (peer of dms bench attention)",
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
           "torch": torch.__version__, "cudnn": torch.backends.cudnn.version() if cuda else None,
           "dtype": "bf16" if cuda else "fp32 (CPU dry run: not a measurement)",
           "tokens": a.tokens, "heads": a.heads, "kv_heads": a.kv_heads, "head_dim": a.head_dim,
           "steps_timed": a.steps, "causal_pairs": a.tokens * (a.tokens + 1) / 2,
           "flops_formula": "forward 4 * causal_pairs * heads * head_dim; backward 2x forward", "results": []}
    for b in a.backends.split(","):
        try:
            r = time_sdpa(torch, a, b.strip(), cuda)
            print(f"sdpa {b}: forward {r['forward_s_median']:.5f} s ({r['forward_tflops']:.1f} TFLOPS), "
                  f"backward {r['backward_s_median']:.5f} s ({r['backward_tflops']:.1f} TFLOPS), GQA {r['gqa'][:40]}")
        except Exception as e:  # recorded, not skipped: the JSON says which backend refused and why
            r = {"backend": b.strip(), "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
            print(f"sdpa {b}: {r['error']}")
        res["results"].append(r)
        if cuda:
            torch.cuda.empty_cache()
    if cuda and not a.no_gemm:
        res["gemm_ceiling"] = gemm_ceiling(torch)
        print(f"bf16 gemm 8192^3: {res['gemm_ceiling']['tflops']:.0f} TFLOPS")
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"sdpa-H{a.heads}-KV{a.kv_heads}-D{a.head_dim}-{a.tokens}-"
                               f"{'cuda' if cuda else 'cpu'}-{res['date'][:10]}.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print("->", path)
    return 0 if any("error" not in r for r in res["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
