/* trainer_testing.h - test-only seams of the trainer, kept out of the
 * production API (train/trainer.h): tests that compare against fixtures
 * replace the counter-RNG noise with the fixture's own. */
#ifndef DMS_TRAINER_TESTING_H
#define DMS_TRAINER_TESTING_H

#include "train/trainer.h"

/* noise: [L, T, KV] host floats used for every row instead of the RNG
 * (NULL restores the RNG); the trainer keeps the pointer. */
void dms_trainer_test_fix_noise(dms_trainer *tr, const float *noise);

#endif
