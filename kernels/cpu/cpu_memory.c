/* cpu_memory.c - host memory for the CPU backend (64-byte aligned so that
 * vector loads and OpenBLAS see aligned rows). */
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

void *dms_cpu_alloc(void *ctx, size_t bytes) {
    (void)ctx;
    if (bytes == 0) bytes = 64;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded);
    if (p) memset(p, 0, rounded);
    return p;
}

void dms_cpu_free(void *ctx, void *p) {
    (void)ctx;
    free(p);
}

void dms_cpu_memcpy(void *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx;
    memcpy(dst, src, bytes);
}

void dms_cpu_sync(void *ctx) { (void)ctx; }
