/* measure.c - the measuring backend of measure.h. Allocation k gets the
 * address base + k * SLOT inside a PROT_NONE reservation, so that every
 * allocation is distinct and non-NULL and any access faults at once. */
#include "kernels/measure.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define SLOT 64                           /* address step between allocations */
#define RESERVED ((size_t)1 << 28)        /* address space: 4M allocations */

static void *m_alloc(void *ctx, size_t bytes) {
    dms_measure *ms = ctx;
    if ((ms->n_allocs + 1) * SLOT > RESERVED) return NULL;
    if (ms->n_allocs == ms->cap) {
        size_t cap = ms->cap ? 2 * ms->cap : 1024;
        size_t *s = realloc(ms->sizes, sizeof(size_t) * cap);
        if (!s) return NULL;
        ms->sizes = s;
        ms->cap = cap;
    }
    ms->sizes[ms->n_allocs] = bytes;
    ms->live += bytes;
    if (ms->live > ms->peak) ms->peak = ms->live;
    return ms->base + SLOT * ms->n_allocs++;
}

static void m_free(void *ctx, void *p) {
    dms_measure *ms = ctx;
    if (!p) return;
    const size_t k = (size_t)((char *)p - ms->base) / SLOT;
    if (k < ms->n_allocs) {
        ms->live -= ms->sizes[k];
        ms->sizes[k] = 0;
    }
}

static void m_upload(void *ctx, void *dst, const void *src, size_t bytes) { (void)ctx, (void)dst, (void)src, (void)bytes; }
static void m_download(void *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx, (void)src;
    memset(dst, 0, bytes);
}
static void m_copy(void *ctx, void *dst, const void *src, size_t bytes) { (void)ctx, (void)dst, (void)src, (void)bytes; }
static void m_narrow(void *ctx, void *dst, dms_dtype t, const float *src, size_t n) {
    (void)ctx, (void)dst, (void)t, (void)src, (void)n;
}
static void m_sync(void *ctx) { (void)ctx; }
static int m_status(void *ctx, char *msg, size_t cap) {
    (void)ctx, (void)msg, (void)cap;
    return 0;
}
static void m_zero(void *ctx, float *x, size_t n) { (void)ctx, (void)x, (void)n; }
static void m_zero_f64(void *ctx, double *x, size_t n) { (void)ctx, (void)x, (void)n; }

int dms_measure_init(dms_measure *ms, dms_dtype weight_dtype, const char *name, dms_err *err) {
    memset(ms, 0, sizeof *ms);
    void *base = mmap(NULL, RESERVED, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) return dms_errf(err, "measuring backend: cannot reserve address space");
    ms->base = base;
    ms->be = dms_cpu_ops;
    ms->be.name = name;
    ms->be.ctx = ms;
    ms->be.weight_dtype = weight_dtype;
    ms->be.alloc = m_alloc;
    ms->be.free = m_free;
    ms->be.upload = m_upload;
    ms->be.download = m_download;
    ms->be.copy = m_copy;
    ms->be.narrow = m_narrow;
    ms->be.sync = m_sync;
    ms->be.status = m_status;
    ms->be.zero = m_zero;
    ms->be.zero_f64 = m_zero_f64;
    return 0;
}

void dms_measure_free(dms_measure *ms) {
    if (ms->base) munmap(ms->base, RESERVED);
    free(ms->sizes);
    memset(ms, 0, sizeof *ms);
}
