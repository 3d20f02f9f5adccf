/* train_plan.h - the memory plan of a training step on one device
 * (DESIGN.md section 2, "Memory plan for the real job"): frozen weights in
 * the backend's dtype, trainable heads and LoRA with their gradients and
 * fp32 Adam moments, the layer inputs kept for the backward, one layer's
 * activations (recomputed layer by layer), the KD chunk logits and the
 * ops' workspace. The numbers are not a separate guess: the model and the
 * trainer are built for real (dms_model_init_random, dms_trainer_create)
 * on a measuring backend (kernels/measure.h) that counts every allocation;
 * the breakdown of the trainer's arena into its parts is then checked
 * against that measurement (`other` is what the breakdown does not name:
 * 0 while it matches train/trainer.c). `dms inspect --plan` prints it. */
#ifndef DMS_TRAIN_PLAN_H
#define DMS_TRAIN_PLAN_H

#include "core/err.h"
#include "train/train_config.h"

typedef struct dms_train_plan {
    int tokens, layers, threads;
    dms_backend_kind backend;
    /* bytes */
    double frozen;       /* base weights in the backend's weight dtype (fp32 CPU, bf16 CUDA) */
    double trainable;    /* DMS heads (+ LoRA), fp32 */
    double grads;        /* their gradients, fp32 (one contiguous arena) */
    double adam;         /* Adam m and v, fp32 */
    double layer_input;  /* one layer's input [T, d], fp32 */
    double inputs_kept;  /* the L + 1 layer inputs kept for the backward */
    double layer_acts;   /* one layer's activations, rebuilt per layer in the backward (recompute) */
    double att_kept;     /* backward_attention keep: every layer's attention output and log-sum-exp */
    double hidden;       /* teacher and student final hidden states */
    double backward;     /* backward scratch (dx, MLP and attention gradients) */
    double kd_chunk;     /* student and teacher logits of one KD chunk [chunk, vocab] */
    double decisions;    /* noise [L, T, KV], decisions, row inputs, statistics */
    double other;        /* measured trainer memory not in the parts above */
    double arena;        /* the trainer's memory as measured (grads + adam + the activations) */
    double workspace;    /* op scratch outside the arenas (attention tiles; CUDA: the one scratch) */
    double total;        /* frozen + trainable + arena + workspace */
} dms_train_plan;

/* model_path: a model folder (config.json is enough) or .gguf. The plan is
 * for rows of cfg->max_len tokens with cfg's variant, LoRA rank and
 * kd_chunk, on `backend` (its weight dtype and workspace rules); threads:
 * the CPU threads (attention tiles are per thread). */
int dms_train_plan_compute(const char *model_path, const dms_train_config *cfg, dms_backend_kind backend,
                           int threads, dms_train_plan *p, dms_err *err);

#endif
