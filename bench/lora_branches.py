#!/usr/bin/env python3
"""Copies a run's checkpoint with only some of its LoRA branches, for the
ablation in docs/quality.md ("Which LoRA branches carry what"): the
lora_B of every branch not kept is set to zero (the branch then adds
nothing) and its crc32 attribute rewritten, so that `dms export`
accepts the copy. The heads and the kept branches are untouched.

    python3 bench/lora_branches.py RUN_DIR STEP OUT_DIR --keep q,k     # q_proj and k_proj only
    python3 bench/lora_branches.py RUN_DIR STEP OUT_DIR --keep none    # the heads alone
    ./build/dms export --run OUT_DIR --out runs/q/qk --dtype fp32

Needs h5py and numpy (pip install h5py).
"""
import os, shutil, sys, zlib

BRANCHES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}


def main():
    args = sys.argv[1:]
    if len(args) != 5 or args[3] != "--keep":
        sys.exit(__doc__.strip())
    if not args[1].isdigit():
        sys.exit("lora_branches.py: STEP must be a step number, not %s" % args[1])
    run, step, out, keep = args[0], int(args[1]), args[2], args[4]
    keep = [] if keep == "none" else keep.split(",")
    if any(k not in BRANCHES for k in keep):
        sys.exit("lora_branches.py: --keep takes q,k,v,o or none, not %s" % args[4])
    import h5py, numpy as np
    ckpt = os.path.join(run, "ckpt-%08d.h5" % step)
    if not os.path.isfile(ckpt):
        sys.exit("lora_branches.py: %s: no such checkpoint" % ckpt)
    os.makedirs(out, exist_ok=True)
    shutil.copy(os.path.join(run, "config.json"), out)
    dst = os.path.join(out, os.path.basename(ckpt))
    shutil.copy(ckpt, dst)
    zeroed = 0
    with h5py.File(dst, "r+") as f:
        for name, ds in f["params"].items():
            if ".lora_B." in name and not any("." + BRANCHES[k] + "." in name for k in keep):
                ds[...] = 0
                ds.attrs["crc32"] = np.uint32(zlib.crc32(np.zeros(ds.shape, ds.dtype).tobytes()))
                zeroed += 1
    print("%s: %d lora_B tensors zeroed, kept %s" % (dst, zeroed, ",".join(keep) or "none"), file=sys.stderr)


if __name__ == "__main__":
    main()
