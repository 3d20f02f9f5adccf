/* trainer.h - DMS retrofitting of a frozen model (DESIGN.md section 1):
 * the trainable eviction-logit heads, and one training step's forward and
 * backward on packed rows: teacher pass (eviction off, final hidden states
 * only), student pass with decisions and the delayed-eviction bias (each
 * layer's input kept), KD through the LM head in chunks, the compression
 * loss, then the backward pass layer by layer with recompute. Gradients
 * flow through the frozen layers but only trainable tensors get them. All
 * numeric work goes through the backend op table. */
#ifndef DMS_TRAINER_H
#define DMS_TRAINER_H

#include <stdint.h>

#include "model/model.h"
#include "train/comm.h"
#include "train/train_config.h"

/* One trainable tensor: value (the model's own head or LoRA tensor),
 * gradient and fp32 Adam moments, all in backend memory; `name` is the
 * Hugging Face-style tensor name used in checkpoints and exports. */
typedef struct dms_param {
    char name[128];
    float *p, *g, *m, *v;
    int rows, cols; /* cols = 0: a vector of `rows` */
    size_t n;
} dms_param;

/* One packed training row of cfg->max_len tokens. */
typedef struct dms_row {
    const int32_t *ids;  /* token ids */
    const int32_t *seg;  /* document index of each token (non-decreasing) */
    const uint8_t *mask; /* 1 = token counts in the KD loss (NULL: all) */
    int64_t tok0;        /* global index of the row's first token (noise key) */
    int32_t pos0;        /* position of the first token in its document (dms_shard_row_pos0): the
                          * first segment's positions start here, later ones at 0 */
} dms_row;

#define DMS_MAX_LAYERS 256

typedef struct dms_step_stats {
    double loss, kd, comp;          /* batch means */
    double guide;                   /* attention guidance loss (weighted; 0 when off) */
    double frac;                    /* mean hard decision (fraction flagged): decision CR = 1/(1-frac) */
    double frac_layer[DMS_MAX_LAYERS];
    /* Fraction of the row's tokens the inference rule would really have
     * dropped by the end of their document (flagged and more than `window`
     * behind its last token): KV CR = 1/(1-kv_frac), what memory gets. */
    double kv_frac;
    double kv_frac_layer[DMS_MAX_LAYERS];
    double target;                  /* compression target 1 - 1/CR */
    double grad_norm;               /* before clipping */
    double kd_tokens;               /* tokens counted in KD */
    int finite;                     /* loss and gradients finite */
    /* (layer, KV head) pairs that flagged more than 99% / fewer than 1% of
     * the step's decisions: heads gone all-or-nothing */
    int heads_all, heads_none;
} dms_step_stats;

typedef struct dms_trainer dms_trainer;

/* Gives model m fresh DMS heads of cfg->variant (and LoRA if asked) with
 * the run's dms_* settings, and allocates the optimiser state and the
 * activations for rows of cfg->max_len tokens. Checks that m's backend has
 * every training op. */
dms_trainer *dms_trainer_create(dms_model *m, const dms_train_config *cfg, dms_err *err);
/* The part of dms_trainer_create that shapes the model: the run's dms_*
 * settings into m->cfg.dms, fresh heads of cfg->variant, LoRA of
 * cfg->lora_rank (export uses it to rebuild a run's model). */
int dms_trainer_prepare_model(dms_model *m, const dms_train_config *cfg, dms_err *err);
void dms_trainer_free(dms_trainer *tr);

int dms_trainer_n_params(const dms_trainer *tr);
const dms_backend *dms_trainer_backend(const dms_trainer *tr);
dms_param *dms_trainer_param(dms_trainer *tr, int i);
/* The fraction of decisions (layer l, KV head h) flagged in the last step
 * (after dms_trainer_reduce: over every rank's rows). */
double dms_trainer_head_frac(const dms_trainer *tr, int l, int h);

/* Forward + backward over n_rows rows; gradients are zeroed first, then
 * accumulated. kd_tokens_total / rows_total normalise the losses and the
 * statistics (pass the batch totals over all ranks, so that the sums over
 * ranks are the batch means); noise is keyed by step. The statistics stay
 * on the backend until one read at the end; a failed op (the backend's
 * sticky status) is an error. */
int dms_trainer_grads(dms_trainer *tr, const dms_row *rows, int n_rows, int64_t step,
                      double kd_tokens_total, int rows_total, dms_step_stats *st, dms_err *err);
/* Multi-rank: sums the gradients (one all-reduce over every trainable
 * tensor, or, after dms_trainer_overlap, waits for the sums the backward
 * started) and the loss parts over ranks, then recomputes the loss, the
 * gradient norm and finiteness. Nothing to do for a single process. */
int dms_trainer_reduce(dms_trainer *tr, dms_comm *comm, dms_step_stats *st, dms_err *err);
/* Multi-rank, when comm has iallreduce_f32: from now on the backward of a
 * step's last row starts the sum of each layer's gradients (its heads,
 * then its LoRA) as soon as that layer is done, while the layers below it
 * are still being computed; dms_trainer_reduce then only waits. Each
 * element is summed over ranks exactly as by the one all-reduce (the same
 * values, bit for bit). Meanwhile the sums write the gradients in place, so
 * dms_trainer_grads leaves st->grad_norm at 0 and dms_trainer_reduce
 * computes it. A no-op for one process or a comm without it. */
void dms_trainer_overlap(dms_trainer *tr, dms_comm *comm);
/* Phases of dms_trainer_grads, for `dms bench train`. */
enum { DMS_PHASE_SETUP, DMS_PHASE_TEACHER, DMS_PHASE_STUDENT, DMS_PHASE_KD, DMS_PHASE_BACKWARD, DMS_PHASE_N };
/* "setup", "teacher", "student", "kd", "backward". */
const char *dms_phase_name(int phase);
/* With phase_s non-NULL, every later dms_trainer_grads synchronises the
 * backend at each phase's end and adds the phase's wall seconds to
 * phase_s[DMS_PHASE_*] (a benchmark's breakdown; the syncs cost what
 * overlap between phases would have hidden). NULL: off, no syncs. */
void dms_trainer_time_phases(dms_trainer *tr, double *phase_s);
/* Global grad-norm clip and one AdamW step on every trainable tensor. */
void dms_trainer_apply(dms_trainer *tr, int64_t step, dms_step_stats *st);
/* KD token weight of a row (mask and not-EOS), for computing batch totals. */
double dms_trainer_row_kd_tokens(const dms_trainer *tr, const dms_row *row);

#endif
