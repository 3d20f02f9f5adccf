/* train_config.h - the resolved configuration of a DMS training run, read
 * from a JSON file (configs/NAME.json). Every key is declared once in a
 * table (train_config.c) that drives parsing, type checks, defaults, the
 * "unknown key 'lr_shedule' (did you mean 'lr_schedule'?)" errors and the
 * resolved JSON that checkpoints store. */
#ifndef DMS_TRAIN_CONFIG_H
#define DMS_TRAIN_CONFIG_H

#include <stdint.h>

#include "core/err.h"
#include "data/shards.h" /* dms_packing */

typedef enum { DMS_VARIANT_ADAPTER = 0, DMS_VARIANT_NEURON } dms_variant;
typedef enum { DMS_ALPHA_PER_HEAD = 0, DMS_ALPHA_PER_LAYER } dms_alpha_per;
/* What the compression loss holds to the target: each row's mean decision
 * (NVIDIA's loss), or, an optional extension, each (layer, KV head) of a row
 * on its own (against all-or-nothing heads; docs/quality.md). */
typedef enum { DMS_COMP_PER_ROW = 0, DMS_COMP_PER_HEAD } dms_comp_per;
/* The distillation loss: KL(student || teacher) (NVIDIA's), or, an optional
 * extension, KL(teacher || student) (FastDMS's; the direction that
 * dms eval --task kl measures). The value is the kd_chunk op's `forward`. */
typedef enum { DMS_KD_REVERSE = 0, DMS_KD_FORWARD } dms_kd_dir;
/* How guidance shares out its eviction targets: the same fraction in every
 * layer, one threshold over the whole row, or, in each (layer, KV head)
 * lane, the lane's share of the student's own decisions on the row (shifted
 * by one amount for all lanes so that their mean is the step's target). */
typedef enum { DMS_GUIDE_PER_LAYER = 0, DMS_GUIDE_PER_ROW, DMS_GUIDE_PER_LANE } dms_guide_rank;
/* What guidance ranks keys by: the largest future attention probability
 * (Locret's score), or that times the l1 norm of the key's value (the
 * value-aware score of VATP, Guo et al. 2024, arXiv 2406.12335). */
typedef enum { DMS_GUIDE_ATTENTION = 0, DMS_GUIDE_ATTENTION_VALUE } dms_guide_score;
/* How a key's future attention is taken over the queries (and heads of its
 * group) past the window: the largest probability (Locret), or their mean
 * (what an eviction takes from the average later query: H2O's accumulated
 * attention, over the future and per query). */
typedef enum { DMS_GUIDE_MAX = 0, DMS_GUIDE_MEAN } dms_guide_reduce;
/* The student's attention in the backward: kept from the forward (each
 * layer's output and log-sum-exp), or run again in the layer's recompute. */
typedef enum { DMS_ATT_KEEP = 0, DMS_ATT_RECOMPUTE } dms_backward_attention;
typedef enum { DMS_LR_CONSTANT = 0, DMS_LR_COSINE, DMS_LR_LINEAR } dms_lr_schedule;
/* The target CR over the steps: ours (linear from 1, one unit every
 * steps_per_cr steps, held at cr_final), or NVIDIA's (configs/qwen3_8b.yaml
 * of Model-Optimizer: linear from 1 to 16 over 510 steps; the run stops at
 * the step where the target reaches cr_final). */
typedef enum { DMS_CR_LINEAR = 0, DMS_CR_NVIDIA } dms_cr_schedule;
#define DMS_NVIDIA_CR_FINAL 16.0  /* NVIDIA's dms.final_cr */
#define DMS_NVIDIA_CR_STEPS 510   /* NVIDIA's dms.final_step */
typedef enum { DMS_BACKEND_CPU = 0, DMS_BACKEND_CUDA } dms_backend_kind;

typedef struct dms_train_config {
    /* where */
    char model[1024];       /* HF folder or .gguf */
    char data[1024];        /* folder of token shards from `dms prep` */
    char output[1024];      /* run folder: checkpoints, metrics.jsonl, config */
    /* how long, how big */
    int steps;
    int batch_size;         /* packed rows per rank per step */
    int max_len;            /* tokens per row; must equal the shards' */
    dms_packing packing;    /* how the shards were packed (dms prep --packing); must equal the shards' */
    uint64_t seed;
    int threads;            /* 0 = all cores */
    dms_backend_kind backend; /* where the step runs (the CLI's --backend overrides) */
    /* optimiser */
    float lr;
    dms_lr_schedule lr_schedule;
    int warmup_steps;
    float min_lr_ratio;     /* cosine/linear floor, as a fraction of lr */
    int decay_steps;        /* cosine/linear: decay over the last N steps only; 0: all after warm-up */
    float beta1, beta2, adam_eps, weight_decay, grad_clip;
    /* DMS method (DESIGN.md section 1) */
    dms_variant variant;
    dms_alpha_per alpha_per;
    int window;
    int sinks;              /* optional extension: first N tokens of a document never evicted (0: off) */
    float tau;
    float tau_start;        /* optional extension: anneal from tau_start to tau (0: off) */
    int tau_steps;          /* over this many steps */
    float guide_weight;     /* optional extension: attention guidance weight at step 0 (0: off) */
    int guide_steps;        /* falling linearly to 0 at this step */
    dms_guide_rank guide_rank; /* keys ranked within each layer, over the row, or per lane at the student's shares */
    dms_guide_score guide_score; /* ranked by future attention, or by it times the value's l1 norm */
    dms_guide_reduce guide_reduce; /* that attention: the largest over the later queries, or their mean */
    int neuron_warmup;      /* neuron variant: steps of the borrowed channel's fade (0: off) */
    float alpha_scale;
    float alpha_offset;
    float cr_final;
    int steps_per_cr;
    dms_cr_schedule cr_schedule;
    float compression_weight;
    dms_comp_per compression_per;
    dms_kd_dir kd;          /* direction of the KL */
    int lora_rank;          /* 0 = no LoRA */
    float lora_alpha;
    /* bookkeeping */
    int save_every;
    int keep_last;
    int log_every;
    int max_bad_steps;      /* consecutive NaN/Inf steps before the run stops */
    int rank_timeout_s;     /* multi-rank: seconds a collective may wait before the job is aborted (0: never) */
    int kd_chunk;           /* rows per KD chunk through the LM head */
    dms_backward_attention backward_attention; /* keep (L x T x H x (hd + 1) floats more) or recompute */
} dms_train_config;

void dms_train_config_defaults(dms_train_config *c);
/* Reads `path` over the defaults. Unknown keys, wrong types and out-of-range
 * values are errors naming the file and the key. */
int dms_train_config_load(dms_train_config *c, const char *path, dms_err *err);
/* Same from JSON text (what a checkpoint stores); `what` names it in errors. */
int dms_train_config_parse(dms_train_config *c, const char *json, const char *what, dms_err *err);
/* The resolved config as JSON text (malloc'd): every key, defaults included. */
char *dms_train_config_to_json(const dms_train_config *c);
/* Target compression ratio and the compression target 1 - 1/CR at `step`. */
float dms_cr_at(const dms_train_config *c, int step);
/* Steps the run takes: `steps`, or with cr_schedule nvidia the first step
 * whose target CR reaches cr_final, if that comes earlier (cr_final 8: 238,
 * the checkpoint NVIDIA's extract example uses). */
int dms_train_steps(const dms_train_config *c);
/* Temperature of the relaxed decisions at `step`: tau, or, with tau_start
 * set, linear from tau_start at step 0 to tau at tau_steps, then tau. */
float dms_tau_at(const dms_train_config *c, int step);
/* Weight of the attention guidance loss at `step`: guide_weight falling
 * linearly to 0 at guide_steps (0 when off). */
float dms_guide_at(const dms_train_config *c, int step);
/* Neuron warm-up at `step`: the fraction g = 1 - step / neuron_warmup of
 * the borrowed channel that attention still sees (the decision logit is
 * scaled by 1 - g); 0 after the warm-up or when it is off. */
float dms_neuron_keep_at(const dms_train_config *c, int step);
/* Learning rate at `step` (0-based). */
float dms_lr_at(const dms_train_config *c, int step);
/* "cpu" or "cuda" */
const char *dms_backend_kind_name(dms_backend_kind k);
/* Levenshtein distance, for "did you mean" suggestions. */
int dms_edit_distance(const char *a, const char *b);

#endif
