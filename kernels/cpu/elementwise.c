/* elementwise.c - zero, scale, add, axpy, and the two reductions: the sum
 * of squares (grad norm, read by the host) and the weighted sum kept on
 * the device (per-step statistics). Reductions use fixed blocks so that the
 * result does not depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

/* Elements per partial sum (fixed, so the result is thread-count free). */
#define SUM_BLOCK 8192

void dms_cpu_zero(void *ctx, float *x, size_t n) {
    (void)ctx;
    if (n) memset(x, 0, n * sizeof *x);
}

void dms_cpu_zero_f64(void *ctx, double *x, size_t n) {
    (void)ctx;
    if (n) memset(x, 0, n * sizeof *x);
}

void dms_cpu_scale(void *ctx, float *x, float a, size_t n) {
    (void)ctx;
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] *= a;
}

void dms_cpu_add(void *ctx, float *y, const float *x, size_t n) {
    (void)ctx;
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

void dms_cpu_axpy(void *ctx, float *y, float a, const float *x, size_t n) {
    (void)ctx;
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

/* sum over [b0, e) of x[i] * (sq ? x[i] : w ? w[i] : 1), in double */
static double span_sum(const float *x, const float *w, int sq, size_t b0, size_t e) {
    double s = 0.0;
    for (size_t i = b0; i < e; i++) s += (double)x[i] * (sq ? x[i] : w ? w[i] : 1.0f);
    return s;
}

/* The same over all n, by fixed blocks. A single block runs outside any
 * OpenMP region: a region of one thread between two-thread regions makes
 * libgomp re-dock its spinning workers, which costs more than the sum. */
static double block_sum(void *ctx, const char *op, const float *x, const float *w, int sq, size_t n) {
    const size_t nb = (n + SUM_BLOCK - 1) / SUM_BLOCK;
    if (nb <= 1) return span_sum(x, w, sq, 0, n);
    double *part = malloc(sizeof(double) * nb);
    if (!part) {
        dms_cpu_fail(ctx, op, "out of memory");
        return NAN;
    }
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < nb; b++)
        part[b] = span_sum(x, w, sq, b * SUM_BLOCK, (b + 1) * SUM_BLOCK < n ? (b + 1) * SUM_BLOCK : n);
    double total = 0.0;
    for (size_t b = 0; b < nb; b++) total += part[b];
    free(part);
    return total;
}

double dms_cpu_sumsq(void *ctx, const float *x, size_t n) { return block_sum(ctx, "sumsq", x, NULL, 1, n); }

void dms_cpu_sum_acc(void *ctx, double *acc, const float *x, const float *w, size_t n) {
    *acc += block_sum(ctx, "sum_acc", x, w, 0, n);
}
