/* arena.c - typed views of backend memory, freed together (arena.h). */
#include "kernels/arena.h"

#include <stdlib.h>
#include <string.h>

void dms_arena_init(dms_arena *a, const dms_backend *be) {
    memset(a, 0, sizeof *a);
    a->be = be;
}

static void *take(dms_arena *a, size_t bytes) {
    if (a->failed) return NULL;
    if (a->n_blocks == a->cap_blocks) {
        int cap = a->cap_blocks ? 2 * a->cap_blocks : 32;
        void **b = realloc(a->blocks, sizeof(void *) * (size_t)cap);
        if (!b) {
            a->failed = bytes ? bytes : 1;
            return NULL;
        }
        a->blocks = b;
        a->cap_blocks = cap;
    }
    void *p = a->be->alloc(a->be->ctx, bytes);
    if (!p) {
        a->failed = bytes ? bytes : 1;
        return NULL;
    }
    a->blocks[a->n_blocks++] = p;
    a->bytes += bytes;
    return p;
}

float *dms_arena_f32(dms_arena *a, size_t n) { return take(a, n * sizeof(float)); }
double *dms_arena_f64(dms_arena *a, size_t n) { return take(a, n * sizeof(double)); }
int32_t *dms_arena_i32(dms_arena *a, size_t n) { return take(a, n * sizeof(int32_t)); }

int dms_arena_check(const dms_arena *a, const char *what, dms_err *err) {
    if (!a->failed) return 0;
    return dms_errf(err, "%s: out of %s backend memory (an allocation of %.1f MiB failed after %.1f MiB)", what,
                    a->be->name, a->failed / 1048576.0, a->bytes / 1048576.0);
}

void dms_arena_free(dms_arena *a) {
    for (int i = 0; i < a->n_blocks; i++) a->be->free(a->be->ctx, a->blocks[i]);
    free(a->blocks);
    const dms_backend *be = a->be;
    memset(a, 0, sizeof *a);
    a->be = be;
}
