/* run_testing.h - the test seam of the training loop, outside its
 * production API (train/run.h). run.c holds a weak definition that always
 * returns 0; a test binary (tests/seams/) links a strong one. */
#ifndef DMS_RUN_TESTING_H
#define DMS_RUN_TESTING_H

/* Non-zero: treat `step` as non-finite (loss and gradients NaN). */
int dms_test_fault_nonfinite(int step);

#endif
