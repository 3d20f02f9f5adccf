/* cmd_export.c - `dms export`: flags in, a self-compressing Hugging Face
 * folder out (the work is model/export.c). Exit codes: 0 done, 1 failed,
 * 2 bad command line. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "kernels/registry.h"
#include "model/export.h"

int dms_cmd_export(int argc, char **argv) {
    const char *run = NULL, *out = NULL, *dtype = "bf16", *model = NULL;
    int step = -1, force = 0, threads = 0;
    float shard_mb = 5000;
    const dms_arg args[] = {
        {"--run", ARG_STR, &run, "RUN", "training run folder made by 'dms train' (config.json, ckpt-*.h5)"},
        {"--step", ARG_INT, &step, "N", "export RUN/ckpt-N (default: the newest checkpoint)"},
        {"--out", ARG_STR, &out, "DIR", "folder to write (built as DIR.tmp-<pid>, renamed when complete)"},
        {"--dtype", ARG_STR, &dtype, "T", "bf16 (default), fp16 or fp32: the dtype of every tensor"},
        {"--force", ARG_BOOL, &force, NULL, "replace DIR if it exists and is not empty (after the new one is complete)"},
        {"--shard-size", ARG_FLOAT, &shard_mb, "MB", "shard the weights above this many MB (10^6 bytes; default 5000)"},
        {"--model", ARG_STR, &model, "PATH", "source model (default: the run config's \"model\")"},
        {"--threads", ARG_INT, &threads, "N", "CPU threads (default: all cores)"},
    };
    const dms_cmd_spec spec = {
        .name = "export",
        .summary = "dms export - write a self-compressing Hugging Face model folder from a training run",
        .usage = "dms export --run RUN --out DIR [--step N] [--dtype bf16|fp16|fp32] [--force] [--shard-size MB]",
        .args = args,
        .n_args = (int)(sizeof args / sizeof args[0]),
        .epilog =
            "The folder holds model.safetensors (or model-0000K-of-0000N.safetensors shards and\n"
            "model.safetensors.index.json), config.json (the source config, every field kept, plus the\n"
            "dms_* fields under NVIDIA's names) and the tokenizer files (copied, or written from a GGUF's\n"
            "metadata). LoRA is merged into q/k/v/o. Adapter heads are stored as\n"
            "model.layers.{i}.self_attn.dms_proj_alpha{,_norm}.weight (dms_separate_alpha: true); neuron\n"
            "decision rows are written into q_proj (no extra tensors, dms_separate_alpha: false).\n"
            "Details: docs/export.md.\n\n"
            "examples:\n"
            "  dms export --run checkpoints/demo/run --out exports/smollm2-dms\n"
            "  dms export --run runs/qwen3 --step 500 --out exports/qwen3-dms --dtype bf16 --shard-size 5000\n"
            "  dms export --run checkpoints/demo/run --out exports/demo-fp32 --dtype fp32 --force",
    };
    int pr = dms_args_parse(&spec, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (!run || !out) {
        fprintf(stderr, "dms export: --run and --out are required (see 'dms export --help')\n");
        return 2;
    }
    dms_export_opts o;
    dms_export_opts_defaults(&o);
    if (dms_export_parse_dtype(dtype, &o.dtype) != 0) {
        fprintf(stderr, "dms export: unknown --dtype '%s' (bf16, fp16 or fp32)\n", dtype);
        return 2;
    }
    if (!(shard_mb > 0)) {
        fprintf(stderr, "dms export: --shard-size must be positive (got %g)\n", (double)shard_mb);
        return 2;
    }
    if (step < -1) {
        fprintf(stderr, "dms export: --step must be a checkpoint step >= 0 (got %d)\n", step);
        return 2;
    }
    dms_set_threads(threads);
    o.run = run;
    o.out = out;
    o.step = step;
    o.force = force;
    o.shard_mb = shard_mb;
    o.model = model;
    o.log = stderr;
    dms_err err = {0};
    dms_backend be;
    if (dms_backend_open(&be, "cpu", 0, &err) != 0) {
        fprintf(stderr, "dms export: %s\n", err.msg);
        return 1;
    }
    o.be = &be;
    /* a write past a file-size limit must fail with EFBIG (and leave no
     * folder behind), not kill the process */
    signal(SIGXFSZ, SIG_IGN);
    int rc = dms_export_run(&o, NULL, &err);
    dms_backend_close(&be);
    if (rc != 0) {
        fprintf(stderr, "dms export: %s\n", err.msg);
        return 1;
    }
    return 0;
}
