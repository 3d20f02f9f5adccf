/* arena.h - activation memory owned by a backend. A run (a training step's
 * buffers, a forward pass's scratch) takes typed views from one arena and
 * gives them back all at once; a failed allocation is remembered and
 * reported once by dms_arena_check, so that callers need not test every
 * buffer. Views are typed pointers into backend memory: callers index them
 * in elements and never compute byte offsets. */
#ifndef DMS_ARENA_H
#define DMS_ARENA_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "kernels/backend.h"

typedef struct dms_arena {
    const dms_backend *be;
    void **blocks;
    int n_blocks, cap_blocks;
    size_t bytes;   /* total allocated */
    size_t failed;  /* bytes of the first allocation that failed (0: none) */
} dms_arena;

void dms_arena_init(dms_arena *a, const dms_backend *be);
/* Zero-filled views of n elements (n = 0 gives a valid minimal view);
 * NULL on failure, remembered for dms_arena_check. */
float *dms_arena_f32(dms_arena *a, size_t n);
double *dms_arena_f64(dms_arena *a, size_t n);
int32_t *dms_arena_i32(dms_arena *a, size_t n);
/* 0 if every allocation so far succeeded, else -1 with "WHAT: out of
 * backend memory (...)". */
int dms_arena_check(const dms_arena *a, const char *what, dms_err *err);
/* Frees every view. */
void dms_arena_free(dms_arena *a);

#endif
