#!/usr/bin/env python3
"""Peer benchmark: time NVIDIA Model-Optimizer's own DMS training step.

This is not `dms` code and not a test.  It drives the reference
implementation of Dynamic Memory Sparsification training published by NVIDIA
(Model-Optimizer, `experimental/dms`, Apache-2.0) at a shape of our choosing,
so that its step time and memory can be set beside ours.  NVIDIA's sources
are never part of this repository: they are carried, together with the
library versions they pin, in the git-ignored folder `.peer/` (see
`.peer/README`), and imported from there at run time.

What runs, per timed step (one packed row of --tokens random token ids, one
document, batch 1):

  * the model pair is built through NVIDIA's own entry points
    (`dms.training.engine.get_student_model`, `get_teacher_model` when the
    teacher is a separate model, `CombinedModel`, `distillation_forward`,
    `dms_schedule`) with their Qwen3 DMS model class
    (`models.qwen3.modeling_qwen3_dms.Qwen3ForCausalLMDMS`, FlexAttention
    with the DMS score modification in training).  The only substitution is
    the loader handed to `get_student_model`: it builds the model from a
    Hugging Face config.json with random weights instead of downloading a
    checkpoint.  Zeroing of the DMS projection and the choice of trainable
    parameters are theirs (`_configure_gradients`: the DMS alpha projections
    and their norms only).
  * DMS settings, dtype, mixed precision, optimiser settings and FlexAttention
    kernel options are read from their YAML (default: their
    configs/qwen3_1.7b.yaml: alpha_scale 100, initial offset 5, window 512,
    separate alpha, alpha per head, tau 0.1, fp32 weights, bf16: true,
    AdamW betas 0.9/0.95, lr 3e-5, max_grad_norm 1).  As in their train.py,
    the teacher is the student itself run in DMS teacher mode whenever the
    config names no separate teacher (their shipped configs do not).
  * one step = what Hugging Face's Trainer does for one micro-batch with
    bf16: true and no FSDP: forward of CombinedModel (teacher forward under
    no_grad, student forward with Gumbel noise, their chunked forward-KL
    distillation loss + DMS compression loss) under bf16 autocast with fp32
    weights, backward, gradient clipping, fused AdamW step on the trainable
    parameters, zero_grad.  The compression target is the one their schedule
    gives at --schedule-step (default 200 of final_step 510).

What differs from their full trainer (also written into the JSON):

  * one GPU, no FSDP: their YAML asks for FSDP "full_shard offload" (fp32
    master weights sharded and offloaded to CPU, bf16 parameter all-gather)
    with FSDP activation checkpointing.  Here the fp32 weights stay on the GPU
    and bf16 comes from autocast, which is what the HF Trainer does with
    bf16: true when FSDP is off.  --activation-checkpointing turns on
    non-reentrant checkpointing of every decoder layer (the kind FSDP's
    activation_checkpointing applies); it is off by default.
  * synthetic data (random ids, one document, no padding) instead of their
    OpenR1-Math blend; no tokenizer, no data loader, no logging, no
    checkpoint saving; gradient accumulation 1 (their 1.7B config
    accumulates 16 micro-batches per optimiser step: the per-micro-batch work
    timed here is the same, the optimiser step is then 16x rarer, and it is
    tiny either way).
  * random weights, optionally fewer layers (--layers).
  * --device cpu is a dry run, not a measurement: torch's FlexAttention has
    no backward on CPU (torch 2.11), so on CPU their training attention gets a
    dense evaluation of their own score_mod (it matches FlexAttention's
    forward to ~1e-6), and their Gumbel-noise sampler, which forks the CUDA
    RNG, forks the CPU one instead.  Nothing of theirs is replaced on CUDA.

Peak memory on CUDA is torch.cuda.max_memory_allocated over the timed steps
(the warm-up's peak is reported beside it); tokens/s is --tokens divided by
the median step time.

Usage (from the repository root):

    python3 bench/nvidia_peer.py --config bench/models/qwen3_1.7b/config.json \
        --tokens 8192 --steps 3 --device cuda --out OUTDIR

By default the pinned transformers 4.57.3 (with the huggingface_hub and
tokenizers versions it accepts) is unpacked from .peer/wheels into a temporary
folder and put first on sys.path; --system-transformers uses whatever is
installed instead.
"""
import argparse
import copy
import datetime
import functools
import hashlib
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import types
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(REPO, ".peer")
PEER_SRC = os.path.join(PEER, "nvidia_dms")
PEER_WHEELS = os.path.join(PEER, "wheels")
DEFAULT_NV_CONFIG = os.path.join(PEER_SRC, "configs", "qwen3_1.7b.yaml")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="Hugging Face config.json of the model (random weights)")
    p.add_argument("--tokens", type=int, default=8192, help="tokens in the one packed row (batch 1)")
    p.add_argument("--steps", type=int, default=3, help="timed steps, after one untimed warm-up step")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps (compilation happens here)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--layers", type=int, default=None, help="keep only the first L decoder layers")
    p.add_argument("--window", type=int, default=None,
                   help="DMS sliding window (default: their YAML's window_size, 512)")
    p.add_argument("--out", default=".", help="folder for the JSON result")
    p.add_argument("--nv-config", default=DEFAULT_NV_CONFIG,
                   help="NVIDIA's training YAML to take DMS / precision / optimiser settings from")
    p.add_argument("--schedule-step", type=int, default=200,
                   help="trainer step at which their dms_schedule gives the compression target")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="non-reentrant checkpointing of each decoder layer (their FSDP config enables it)")
    p.add_argument("--teacher", choices=["auto", "same", "separate"], default="auto",
                   help="auto: as their train.py decides from the YAML (same model when no teacher_name); "
                        "separate: a plain Qwen3ForCausalLM teacher via their get_teacher_model")
    p.add_argument("--no-kernel-options", action="store_true",
                   help="drop the FlexAttention kernel_options of their YAML (forward_fn_kwargs)")
    p.add_argument("--eager", action="store_true",
                   help="disable torch.compile everywhere (their code compiles FlexAttention and helpers); "
                        "for debugging only, not representative")
    p.add_argument("--system-transformers", action="store_true",
                   help="use the installed transformers instead of the pinned wheels in .peer/wheels")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def refuse_without_peer():
    needed = [os.path.join(PEER_SRC, "dms", "training", "engine.py"),
              os.path.join(PEER_SRC, "models", "qwen3", "modeling_qwen3_dms.py")]
    missing = [n for n in needed if not os.path.isfile(n)]
    if missing:
        print(f"nvidia_peer: {os.path.relpath(PEER, REPO)}/ is missing or incomplete "
              f"(no {os.path.relpath(missing[0], REPO)}): it must hold NVIDIA's experimental/dms "
              f"sources and pinned wheels, prepared on a machine with network access", file=sys.stderr)
        sys.exit(2)


def peer_source_commit():
    try:
        with open(os.path.join(PEER, "README")) as f:
            m = re.search(r"commit[:\s]+([0-9a-f]{40})", f.read())
            return m.group(1) if m else None
    except OSError:
        return None


def unpack_pinned_wheels():
    """Unpack .peer/wheels/*.whl into a temporary site folder, put it first on sys.path."""
    wheels = sorted(w for w in os.listdir(PEER_WHEELS) if w.endswith(".whl")) if os.path.isdir(PEER_WHEELS) else []
    if not wheels:
        print(f"nvidia_peer: no wheels in {os.path.relpath(PEER_WHEELS, REPO)}/ "
              f"(use --system-transformers to run on the installed transformers)", file=sys.stderr)
        sys.exit(2)
    key = hashlib.sha256()
    for w in wheels:
        key.update(w.encode())
        key.update(str(os.path.getsize(os.path.join(PEER_WHEELS, w))).encode())
    site = os.path.join(tempfile.gettempdir(), "dms-peer-site-" + key.hexdigest()[:16])
    marker = os.path.join(site, ".complete")
    if not os.path.exists(marker):
        tmp = site + f".tmp{os.getpid()}"
        os.makedirs(tmp, exist_ok=True)
        for w in wheels:
            with zipfile.ZipFile(os.path.join(PEER_WHEELS, w)) as z:
                z.extractall(tmp)
        open(os.path.join(tmp, ".complete"), "w").close()
        try:
            os.rename(tmp, site)
        except OSError:  # another run got there first
            pass
    sys.path.insert(0, site)
    return site, wheels


def load_yaml(path):
    import yaml
    with open(path) as f:
        return yaml.safe_load(f)


def main(argv=None):
    args = parse_args(argv)
    refuse_without_peer()
    if args.device == "cuda":
        # their launch scripts export this before training
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

    site = wheels = None
    if not args.system_transformers:
        site, wheels = unpack_pinned_wheels()
    sys.path.insert(0, PEER_SRC)

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.eager:
        torch._dynamo.config.disable = True
    if args.device == "cuda" and not torch.cuda.is_available():
        print("nvidia_peer: --device cuda but torch sees no GPU", file=sys.stderr)
        sys.exit(2)

    import transformers
    from transformers import Qwen3ForCausalLM
    from dms.training import engine
    from models.qwen3.configuration_qwen3_dms import Qwen3ConfigDMS
    from models.qwen3.modeling_qwen3_dms import Qwen3ForCausalLMDMS

    cpu_adaptations = []
    if args.device == "cpu":
        # Their noise sampler forks the RNG of the input's device assuming it is
        # a CUDA device; on CPU, fork only the CPU generator (which fork_rng
        # always saves and restores) while their sampler runs.
        original_noise = engine.get_dms_noise
        original_fork_rng = torch.random.fork_rng

        def cpu_dms_noise(*a, **kw):
            torch.random.fork_rng = lambda devices=None, **k: original_fork_rng(devices=[], **k)
            try:
                return original_noise(*a, **kw)
            finally:
                torch.random.fork_rng = original_fork_rng

        engine.get_dms_noise = cpu_dms_noise
        cpu_adaptations.append("get_dms_noise: RNG fork restricted to the CPU generator (theirs assumes CUDA)")
        # FlexAttention has no backward on CPU (torch 2.11: eager raises
        # NotImplementedError, compiled fails in Inductor).  For the CPU dry run
        # only, their training attention gets a dense evaluation of the same
        # score_mod; on CUDA their FlexAttention call is used untouched.
        import dms.attention as dms_attention_module
        dms_attention_module.flex_attention = dense_score_mod_attention
        cpu_adaptations.append("FlexAttention replaced by a dense evaluation of their score_mod "
                               "(FlexAttention has no CPU backward): CPU timings are NOT comparable")

    nv = load_yaml(args.nv_config)
    model_cfg, dms_cfg, data_cfg, hf_cfg = nv["model"], dict(nv["dms"]), nv["data"], nv["hf_trainer"]
    if args.window is not None:
        dms_cfg["window_size"] = args.window

    with open(args.config) as f:
        hf_json = json.load(f)
    for k in ("architectures", "transformers_version", "auto_map"):
        hf_json.pop(k, None)
    if args.layers is not None:
        if not 1 <= args.layers <= hf_json["num_hidden_layers"]:
            sys.exit(f"nvidia_peer: --layers must be in 1..{hf_json['num_hidden_layers']}")
        hf_json["num_hidden_layers"] = args.layers
        if hf_json.get("layer_types"):
            hf_json["layer_types"] = hf_json["layer_types"][: args.layers]
    cfg_name = os.path.basename(os.path.dirname(os.path.abspath(args.config))) or "model"
    if args.layers is not None:
        cfg_name += f"-L{args.layers}"

    # Same key mapping their train.py applies before calling get_student_model.
    schedule_keys = ("initial_cr", "final_cr", "final_step")
    dms_kwargs = {(k if k.startswith("dms_") else "dms_" + k): v
                  for k, v in dms_cfg.items() if k not in schedule_keys}
    # Their config class requires window > paged-cache block (an inference-only
    # setting, 256 by default); only touch it for windows that small.
    if dms_kwargs.get("dms_window_size", 512) <= 256:
        dms_kwargs["dms_paged_attention_block_size"] = max(1, dms_kwargs["dms_window_size"] // 2)

    device = torch.device(args.device)
    torch.manual_seed(args.seed)

    class RandomInitLoader:
        """Stands in for `<ModelClass>.from_pretrained` in their loaders: same
        config-plus-overrides semantics, random weights, built on the device."""

        def __init__(self, model_cls, config_cls):
            self.model_cls, self.config_cls = model_cls, config_cls

        def from_pretrained(self, name_or_path, dtype=None, **overrides):
            config = self.config_cls(**copy.deepcopy(hf_json), **overrides)
            with torch.device(device):
                model = self.model_cls(config)
            if dtype is not None:
                model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
            return model

    student_dtype = model_cfg.get("dtype", "float32")
    teacher_dtype = model_cfg.get("teacher_dtype", student_dtype)
    # Names only feed their log lines and the same-model test of train.py; the
    # weights always come from RandomInitLoader.
    student_name = f"{os.path.relpath(os.path.abspath(args.config), REPO)} (random weights)"
    teacher_name = (student_name if model_cfg.get("teacher_name", model_cfg["name"]) == model_cfg["name"]
                    else f"{student_name}, separate teacher")
    model_args = engine.DistillationModelArguments(
        student=engine.ModelArguments(model_name_or_path=student_name, dtype=student_dtype,
                                      forward_fn_kwargs=model_cfg.get("forward_fn_kwargs", {})),
        teacher=engine.ModelArguments(model_name_or_path=teacher_name,
                                      dtype=teacher_dtype,
                                      forward_fn_kwargs=model_cfg.get("teacher_forward_fn_kwargs",
                                                                      model_cfg.get("forward_fn_kwargs", {}))),
    )
    if args.no_kernel_options:
        model_args.student.forward_fn_kwargs = {}
        model_args.teacher.forward_fn_kwargs = {}
    if args.teacher == "auto":
        student_is_teacher = (model_args.student.model_name_or_path == model_args.teacher.model_name_or_path
                              and model_args.student.dtype == model_args.teacher.dtype)
    else:
        student_is_teacher = args.teacher == "same"

    t_build = time.perf_counter()
    student = engine.get_student_model(model_args,
                                       model_constructor=RandomInitLoader(Qwen3ForCausalLMDMS, Qwen3ConfigDMS),
                                       zero_out_proj_alpha=True, dms_kwargs=dms_kwargs)
    if student_is_teacher:
        teacher = student
    else:
        from transformers import Qwen3Config
        teacher = engine.get_teacher_model(model_args,
                                           model_constructor=RandomInitLoader(Qwen3ForCausalLM, Qwen3Config))
        teacher.load_state_dict(student.state_dict(), strict=False)

    trainer_state = engine.DMSTrainerState()
    # CombinedModel reads only global_step and process_index from the trainer.
    trainer_state.set_trainer(types.SimpleNamespace(
        state=types.SimpleNamespace(global_step=args.schedule_step),
        args=types.SimpleNamespace(process_index=0)))
    schedule = functools.partial(engine.dms_schedule,
                                 training_args=types.SimpleNamespace(max_steps=hf_cfg.get("max_steps")),
                                 dms_initial_cr=dms_cfg["initial_cr"], dms_final_cr=dms_cfg["final_cr"],
                                 dms_final_step=dms_cfg.get("final_step"))
    eos = hf_json.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0]
    if eos is None or not 0 <= eos < hf_json["vocab_size"]:
        eos = hf_json["vocab_size"] - 1
    combined = engine.CombinedModel(
        student_model=student, teacher_model=teacher, trainer_state=trainer_state,
        dms_schedule=schedule, forward_fn=engine.distillation_forward,
        student_is_teacher=student_is_teacher,
        tokenizer=types.SimpleNamespace(eos_token_id=eos),  # only eos_token_id is read
        process_vocab_using_chunk=data_cfg.get("process_vocab_using_chunk", 4096),
        forward_fn_kwargs_student=model_args.student.forward_fn_kwargs,
        forward_fn_kwargs_teacher=model_args.teacher.forward_fn_kwargs)
    if args.activation_checkpointing:
        combined.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    combined.train()

    params = combined.get_parameters_to_optimize()
    fused = True  # HF Trainer's default optimiser with torch >= 2.8 is adamw_torch_fused
    opt = torch.optim.AdamW(params, lr=float(hf_cfg.get("learning_rate", 3e-5)),
                            betas=(float(hf_cfg.get("adam_beta1", 0.9)), float(hf_cfg.get("adam_beta2", 0.999))),
                            eps=float(hf_cfg.get("adam_epsilon", 1e-8)),
                            weight_decay=float(hf_cfg.get("weight_decay", 0.0)), fused=fused)
    max_grad_norm = float(hf_cfg.get("max_grad_norm", 1.0))
    bf16 = bool(hf_cfg.get("bf16", False))
    if args.device == "cuda":
        torch.cuda.synchronize()
    build_s = time.perf_counter() - t_build

    n_checkpointed = sum(1 for m in student.modules() if getattr(m, "gradient_checkpointing", False)
                         and m is not student and not hasattr(m, "layers"))
    n_params = sum(p.numel() for p in student.parameters())
    n_trainable = sum(p.numel() for p in params)

    # One packed row: random ids that avoid eos, so the whole row is one document.
    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, hf_json["vocab_size"] - 1, (1, args.tokens), generator=g)
    ids = ids + (ids >= eos).long()
    ids = ids.to(device)
    mask = torch.ones_like(ids, dtype=torch.bool)

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    def step():
        t0 = time.perf_counter()
        with torch.autocast(device_type=args.device, dtype=torch.bfloat16, enabled=bf16):
            out = combined(input_ids=ids, attention_mask=mask)
        loss = out["loss"]
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        gnorm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        t3 = time.perf_counter()
        logs = {k: float(v) for k, v in trainer_state.logs.items()}
        logs["grad_norm"] = float(gnorm)
        return {"total_s": t3 - t0, "forward_s": t1 - t0, "backward_s": t2 - t1, "optimizer_s": t3 - t2}, logs

    warm = []
    for _ in range(args.warmup):
        warm.append(step()[0]["total_s"])
    if args.device == "cuda":
        peak_warm = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    timed, logs = [], {}
    for _ in range(args.steps):
        t, logs = step()
        timed.append(t)

    med = statistics.median(x["total_s"] for x in timed) if timed else float("nan")
    now = datetime.datetime.now()
    res = {
        "what": "NVIDIA Model-Optimizer experimental/dms training step (peer benchmark, bench/nvidia_peer.py)",
        "peer_source": {"repository": "NVIDIA/Model-Optimizer", "path": "experimental/dms",
                        "commit": peer_source_commit(), "license": "Apache-2.0"},
        "date": now.isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "config": os.path.relpath(os.path.abspath(args.config), REPO),
        "config_name": cfg_name,
        "nv_config": os.path.relpath(os.path.abspath(args.nv_config), REPO),
        "model": {k: hf_json.get(k) for k in ("num_hidden_layers", "hidden_size", "intermediate_size",
                                              "num_attention_heads", "num_key_value_heads", "head_dim",
                                              "vocab_size", "tie_word_embeddings")},
        "params_total": n_params, "params_trainable": n_trainable,
        "tokens": args.tokens, "batch": 1, "steps": args.steps, "warmup_steps": args.warmup,
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "cpu_threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__,
                     "cuda": torch.version.cuda, "transformers_source": "pinned wheel (.peer/wheels)"
                     if site else "installed", "wheels": wheels},
        "settings": {"student_dtype": student_dtype, "bf16_autocast": bf16,
                     "student_is_teacher": student_is_teacher,
                     "activation_checkpointing": args.activation_checkpointing,
                     "checkpointed_modules": n_checkpointed,
                     "torch_compile": not args.eager,
                     "dms": dms_kwargs, "schedule": {k: dms_cfg.get(k) for k in schedule_keys},
                     "schedule_step": args.schedule_step,
                     "target_frac_to_close": schedule(args.schedule_step)[0],
                     "target_cr": schedule(args.schedule_step)[1],
                     "forward_fn_kwargs_student": model_args.student.forward_fn_kwargs,
                     "optimizer": {"type": "AdamW", "fused": fused, "lr": opt.defaults["lr"],
                                   "betas": list(opt.defaults["betas"]), "max_grad_norm": max_grad_norm},
                     "gradient_accumulation": 1},
        "build_s": build_s,
        "warmup_s": warm,
        "step_s": [x["total_s"] for x in timed],
        "phases_s": timed,
        "median_step_s": med,
        "median_phases_s": {k: statistics.median(x[k] for x in timed) for k in timed[0]} if timed else None,
        "tokens_per_s": args.tokens / med if timed else None,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if args.device == "cuda" else None,
        "peak_memory_bytes_incl_warmup": peak_warm if args.device == "cuda" else None,
        "cpu_peak_rss_bytes": _peak_rss(),
        "last_step_logs": logs,
        "differences_from_full_trainer": [
            "single device, no FSDP: their YAML uses FSDP 'full_shard offload' (fp32 master weights "
            "sharded/offloaded to CPU, bf16 parameter all-gather); here fp32 weights live on the device "
            "and bf16 comes from autocast (the HF Trainer path for bf16: true without FSDP)",
            "activation checkpointing " + ("ON (non-reentrant, per decoder layer, like FSDP's)"
                                           if args.activation_checkpointing else
                                           "OFF (their FSDP config enables it; pass --activation-checkpointing)"),
            "synthetic data: one row of random token ids, one document, no padding (theirs: OpenR1-Math "
            "blend packed to max_length)",
            "random weights built from config.json instead of from_pretrained of a checkpoint",
            "no HF Trainer loop: no data loader, logging, callbacks, checkpointing, LR scheduler (constant "
            "in their YAML); gradient accumulation 1 (their 1.7B YAML uses 16, the 8B YAML 1)",
            "fixed trainer step (--schedule-step) so the compression target and noise seed stay constant",
        ] + ([f"truncated to {args.layers} decoder layers"] if args.layers is not None else [])
          + (["torch.compile disabled (--eager): NOT representative"] if args.eager else [])
          + cpu_adaptations,
    }
    os.makedirs(args.out, exist_ok=True)
    fname = f"peer_nvidia-{cfg_name}-{args.tokens}-{args.device}-{now.strftime('%Y%m%d-%H%M%S')}.json"
    path = os.path.join(args.out, fname)
    with open(path, "w") as f:
        json.dump(res, f, indent=2)
    mem = (f"peak {res['peak_memory_bytes'] / 2**30:.2f} GiB" if args.device == "cuda"
           else f"peak RSS {res['cpu_peak_rss_bytes'] / 2**30:.2f} GiB")
    print(f"nvidia_peer: {cfg_name} tokens={args.tokens} device={args.device}"
          f"{' (' + res['gpu'] + ')' if res['gpu'] else ''} median_step={med:.4f}s "
          f"tok/s={res['tokens_per_s'] or float('nan'):.1f} {mem} warmup={sum(warm):.1f}s "
          f"loss={logs.get('loss', float('nan')):.4f} torch={torch.__version__} "
          f"transformers={transformers.__version__}"
          f"{' [CPU: dense stand-in for FlexAttention, timings not comparable]' if args.device == 'cpu' else ''}"
          f" -> {path}")
    return 0


def dense_score_mod_attention(query, key, value, score_mod=None, block_mask=None, scale=None,
                              enable_gqa=False, return_lse=False, kernel_options=None, **_ignored):
    """CPU stand-in for torch's flex_attention (no block mask): full score
    matrix in fp32, score_mod applied with broadcast index tensors, softmax,
    weighted sum of values."""
    import torch
    if block_mask is not None or return_lse:
        raise NotImplementedError("dense CPU stand-in: no block_mask / return_lse")
    b_, hq, lq, e = query.shape
    hk, lk = key.shape[1], key.shape[2]
    if hq != hk:
        if not enable_gqa:
            raise ValueError("head counts differ and enable_gqa is off")
        key = key.repeat_interleave(hq // hk, dim=1)
        value = value.repeat_interleave(hq // hk, dim=1)
    scale = e ** -0.5 if scale is None else scale
    scores = torch.matmul(query, key.transpose(-2, -1)).float() * scale
    if score_mod is not None:
        dev = query.device
        b = torch.arange(b_, device=dev).view(-1, 1, 1, 1)
        h = torch.arange(hq, device=dev).view(1, -1, 1, 1)
        q_idx = torch.arange(lq, device=dev).view(1, 1, -1, 1)
        k_idx = torch.arange(lk, device=dev).view(1, 1, 1, -1)
        scores = score_mod(scores, b, h, q_idx, k_idx)
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs.to(value.dtype), value)


def _peak_rss():
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
