/* measure.h - a backend that allocates nothing: it hands out distinct
 * addresses in a reserved, inaccessible range and counts the bytes (live
 * and peak), so that the very code that sizes a training step (the model
 * loader, dms_model_init_random, dms_trainer_create) can be run for any
 * model and row length to learn how much memory it takes (`dms inspect
 * --plan`). Only the memory ops work: upload, copy and zero do nothing,
 * download gives zeros; the numeric ops are the CPU table's and must never
 * be called (no memory stands behind the addresses: touching one faults). */
#ifndef DMS_MEASURE_H
#define DMS_MEASURE_H

#include <stddef.h>

#include "core/err.h"
#include "kernels/backend.h"

/* be.ctx points at the struct itself: use it in place, never copy it. */
typedef struct dms_measure {
    dms_backend be;    /* hand &be to the code being measured */
    size_t live, peak; /* bytes allocated now, and at most */
    size_t n_allocs;   /* allocations so far */
    char *base;        /* the reserved range */
    size_t *sizes;     /* size of allocation k (0 once freed) */
    size_t cap;
} dms_measure;

/* weight_dtype: what the measured backend would convert frozen weights to
 * (DMS_F32 like the CPU, DMS_BF16 like CUDA); name: its name in messages. */
int dms_measure_init(dms_measure *ms, dms_dtype weight_dtype, const char *name, dms_err *err);
void dms_measure_free(dms_measure *ms);

#endif
