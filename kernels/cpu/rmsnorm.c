/* rmsnorm.c - RMSNorm over rows (also per head: Qwen3 q/k norm) and its
 * backward, with the weight gradient for trainable norms. */
#include <math.h>
#include <stdlib.h>

#include "kernels/cpu/cpu_ops.h"

/* Columns per task when a reduction runs down the rows of a matrix. */
#define COL_CHUNK 64

void dms_cpu_rmsnorm(void *ctx, float *out, const float *x, const float *w, int rows, int dim, float eps) {
    (void)ctx;
#pragma omp parallel for if (rows > 16)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float *o = out + (size_t)r * dim;
        double ss = 0.0;
        for (int i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
        float inv = 1.0f / sqrtf((float)(ss / dim) + eps);
        for (int i = 0; i < dim; i++) o[i] = xr[i] * inv * w[i];
    }
}

void dms_cpu_rmsnorm_bwd(void *ctx, float *dx, float *dw, const float *dy, const float *x,
                         const float *w, int rows, int dim, float eps) {
    (void)ctx;
    if (rows <= 0) return;
    float *rinv = malloc(sizeof(float) * (size_t)rows);
    if (!rinv) {
        dms_cpu_fail(ctx, "rmsnorm_bwd", "out of memory");
        dms_cpu_fill_nan(dx, (size_t)rows * dim);
        return;
    }
    /* 1/rms per row, computed exactly as the forward does */
#pragma omp parallel for if (rows > 16)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        double ss = 0.0;
        for (int i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
        rinv[r] = 1.0f / sqrtf((float)(ss / dim) + eps);
    }
    /* dw before dx: dx may alias dy */
    if (dw) {
#pragma omp parallel for schedule(static)
        for (int c0 = 0; c0 < dim; c0 += COL_CHUNK) {
            const int c1 = c0 + COL_CHUNK < dim ? c0 + COL_CHUNK : dim;
            float acc[COL_CHUNK] = {0};
            for (int r = 0; r < rows; r++) {
                const float *xr = x + (size_t)r * dim, *dr = dy + (size_t)r * dim;
                for (int c = c0; c < c1; c++) acc[c - c0] += dr[c] * xr[c] * rinv[r];
            }
            for (int c = c0; c < c1; c++) dw[c] += acc[c - c0];
        }
    }
#pragma omp parallel for if (rows > 16)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim, *dr = dy + (size_t)r * dim;
        float *o = dx + (size_t)r * dim;
        double dot = 0.0;
        for (int i = 0; i < dim; i++) dot += (double)w[i] * dr[i] * xr[i];
        const float ri = rinv[r];
        const float coef = (float)(dot * ri * ri * ri / dim);
        for (int i = 0; i < dim; i++) o[i] = ri * w[i] * dr[i] - xr[i] * coef;
    }
    free(rinv);
}
