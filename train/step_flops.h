/* step_flops.h - the model FLOPs of one DMS training step on one packed
 * row, the numerator of MFU in `dms bench train` (formula and reasoning in
 * docs/training.md, "Benchmark: dms bench train"). Counted: the teacher's
 * forward, the student's forward, the student's input-gradient backward
 * (the base weights are frozen: no weight gradients) and attention over
 * the causal pairs of each document; not counted: the recompute of the
 * backward pass, norms, RoPE, elementwise work, and the DMS heads and LoRA
 * (under 0.1% of the total at the supported shapes). */
#ifndef DMS_STEP_FLOPS_H
#define DMS_STEP_FLOPS_H

#include <stdint.h>

#include "model/config.h"

typedef struct dms_step_flops {
    double pairs;     /* causal (query, key) pairs of the row: the sum over documents of n (n + 1) / 2 */
    double linear;    /* one pass of the layers' projections: 2 * T * L * (q, k, v, o, gate, up, down weights) */
    double lm_head;   /* one pass through the LM head: 2 * T * V * d */
    double attention; /* one attention forward: 4 * pairs * H * head_dim * L (scores and P V) */
    /* teacher + student forward, input-gradient backward (its attention:
     * dP, dQ, dK, dV, twice the forward):
     * 3 (linear + lm_head) + (1 + 1 + 2) attention */
    double total;
} dms_step_flops;

/* seg: the document index of each of the T tokens (non-decreasing). */
dms_step_flops dms_step_flops_of(const dms_config *c, const int32_t *seg, int T);

#endif
