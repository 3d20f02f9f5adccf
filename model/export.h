/* export.h - `dms export`: turns a training run (RUN/config.json +
 * RUN/ckpt-<step>.h5) into a self-compressing Hugging Face model folder:
 * safetensors (single or sharded, bf16/fp16/fp32) with every base tensor
 * under its Hugging Face name, LoRA merged into q/k/v/o, and the DMS heads
 * in NVIDIA's layout (adapter: dms_proj_alpha + dms_proj_alpha_norm
 * tensors; neuron: the decision rows written into q_proj, no extra
 * tensors), config.json = the source config (every field) + the dms_*
 * fields, and the tokenizer (copied, or written from GGUF metadata). The
 * folder is built under DIR.tmp-<pid> and renamed into place only when
 * complete. Layout and compatibility rules: docs/export.md. */
#ifndef DMS_EXPORT_H
#define DMS_EXPORT_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>

#include "core/err.h"
#include "model/model.h"

typedef enum { DMS_EXPORT_BF16 = 0, DMS_EXPORT_FP16, DMS_EXPORT_FP32 } dms_export_dtype;

typedef struct dms_export_opts {
    const char *run;        /* training run folder (made by `dms train`) */
    int64_t step;           /* checkpoint RUN/ckpt-<step>.h5; < 0: the newest */
    const char *model;      /* source model; NULL: the run config's "model" */
    const char *out;        /* folder to write */
    dms_export_dtype dtype; /* default bf16 */
    int force;              /* replace a non-empty `out` (only once the new folder is complete) */
    double shard_mb;        /* shard above this many MB (10^6 bytes, as Hugging Face); <= 0: 5000 */
    const dms_backend *be;  /* where the model is loaded; NULL: the CPU reference (fp32) */
    FILE *log;              /* a line per shard and a summary; NULL: silent */
} dms_export_opts;

typedef struct dms_export_result {
    char ckpt[PATH_MAX];    /* the checkpoint read */
    int64_t step;           /* its step */
    int n_tensors, n_shards;
    uint64_t bytes;         /* tensor data bytes written */
    const char *variant;    /* "adapter", "neuron" or "none" */
    const char *dtype;      /* "bf16", "fp16", "fp32" */
} dms_export_result;

void dms_export_opts_defaults(dms_export_opts *o);
/* "bf16" | "fp16" | "fp32" (also "bfloat16", "float16", "float32"); -1 otherwise. */
int dms_export_parse_dtype(const char *s, dms_export_dtype *out);
const char *dms_export_dtype_name(dms_export_dtype t);

/* The whole command: dms_export_load_run, then dms_export_model. */
int dms_export_run(const dms_export_opts *o, dms_export_result *res, dms_err *err);

/* Loads the run's source model with fp32 weights on o->be (fp32 CPU by
 * default), gives it DMS heads and LoRA as dms_trainer_create does, and
 * reads the chosen checkpoint's params/... into them. Fills res->ckpt and
 * res->step. Errors: no run folder, no checkpoint, a missing --step,
 * an unreadable config, a tensor missing or of the wrong shape (named). */
int dms_export_load_run(dms_model *m, const dms_export_opts *o, dms_export_result *res, dms_err *err);

/* Writes model m (its frozen weights, heads and LoRA as they are) as a
 * Hugging Face folder at o->out (o->run, o->step, o->model unused). */
int dms_export_model(const dms_model *m, const dms_export_opts *o, dms_export_result *res, dms_err *err);

/* config.json of the export as text (malloc'd): the source config with
 * every field kept, or (GGUF source) a complete synthesised one, plus the
 * dms_* fields of m->cfg.dms and torch_dtype. */
char *dms_export_config_json(const dms_model *m, dms_export_dtype dtype, dms_err *err);

/* dms_paged_attention_block_size written for a window: NVIDIA's paged
 * cache needs window > block size; the largest power of two <= window / 2,
 * capped at 256 (1 for windows below 4). */
int dms_export_block_size(int window);

#endif
