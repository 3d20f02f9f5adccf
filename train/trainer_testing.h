/* trainer_testing.h - test-only seams of the trainer, kept out of the
 * production API (train/trainer.h): tests that compare against fixtures
 * replace the counter-RNG noise with the fixture's own (one for every row,
 * or one per row) and read the student logits that the KD sees. */
#ifndef DMS_TRAINER_TESTING_H
#define DMS_TRAINER_TESTING_H

#include "train/trainer.h"

/* noise: [L, T, KV] host floats used for every row instead of the RNG
 * (NULL restores the RNG); the trainer keeps the pointer. */
void dms_trainer_test_fix_noise(dms_trainer *tr, const float *noise);
/* As dms_trainer_test_fix_noise with one noise per row: [n_rows, L, T, KV];
 * row r of a step takes block r % n_rows. */
void dms_trainer_test_fix_noise_rows(dms_trainer *tr, const float *noise, int n_rows);
/* The student logits [T, V] (host) of the last row of the last step,
 * through the backend's LM-head matmul as the KD computes them. */
void dms_trainer_test_student_logits(dms_trainer *tr, float *out);
/* Attention guidance (guide_weight > 0) of the last row of the last step,
 * host copies [L, T, KV]: the teacher's future attention maxima (imp,
 * indexed by key) and the targets (y, indexed by the deciding token t, about
 * key t - 1); mask [T, KV] the decisions the loss covers. Returns 0, or -1
 * when guidance is off. */
int dms_trainer_test_guide(const dms_trainer *tr, const float **imp, const float **y, const float **mask);
/* backward_attention keep: the kept student attention outputs [L, T, H*hd]
 * of the last row (backend memory); NULL with recompute. */
const float *dms_trainer_test_kept_attention(const dms_trainer *tr);

#endif
