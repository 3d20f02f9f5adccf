/* matmul.c - x @ W^T against a frozen or trainable weight (fp32 through
 * OpenBLAS; a weight kept in another dtype - bf16, f16, GGUF blocks -
 * through matmul_quant.c), and its two backward products: the input
 * gradient (any weight dtype, widened a block of rows at a time) and the
 * (fp32) weight gradient. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/quant.h"

/* Columns per task when a reduction runs down the rows of a matrix. */
#define COL_CHUNK 64
#define WIDEN_BLOCK_ROWS DMS_CPU_BF16_BLOCK_ROWS

/* The CPUID-chosen kernels of the context, or of this CPU without one. */
static const dms_cpu_kernels *kernels_of(void *ctx, dms_cpu_kernels *here) {
    const dms_cpu_kernels *k = dms_cpu_ctx_kernels(ctx);
    if (k) return k;
    dms_cpu_kernels_init(here, dms_cpu_isa_best());
    return here;
}

void dms_cpu_matmul(void *ctx, float *out, const float *x, const dms_mat *w, const float *bias, int n) {
    const int k = w->cols, m = w->rows;
    if (w->dtype == DMS_F32) {
        const float *W = w->data;
        if (n == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, m, k, 1.0f, W, k, x, 1, 0.0f, out, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, k, 1.0f, x, k, W, k, 0.0f,
                        out, m);
    } else {
        dms_cpu_kernels here;
        dms_cpu_matmul_kept(kernels_of(ctx, &here), ctx, out, x, w, n, DMS_CPU_KEPT_AUTO);
    }
    if (bias) {
#pragma omp parallel for if (n > 4)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++) out[(size_t)i * m + j] += bias[j];
    }
}

/* Nothing to share on the CPU: one matmul per weight. */
void dms_cpu_matmul_multi(void *ctx, int count, float *const *outs, const float *x, const dms_mat *const *ws,
                          const float *const *biases, int n) {
    for (int i = 0; i < count; i++) dms_cpu_matmul(ctx, outs[i], x, ws[i], biases ? biases[i] : NULL, n);
}

void dms_cpu_matmul_bwd_x(void *ctx, float *dx, const float *dy, const dms_mat *w, int n, int accumulate) {
    const int m = w->rows, k = w->cols;
    if (n <= 0) return;
    const float beta0 = accumulate ? 1.0f : 0.0f;
    if (w->dtype == DMS_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, k, m, 1.0f, dy, m, w->data, k, beta0,
                    dx, k);
        return;
    }
    /* another dtype: dx (+)= sum over row blocks of dy[:, blk] @ widen(W[blk, :]) */
    float *blk = malloc(sizeof(float) * (size_t)WIDEN_BLOCK_ROWS * (size_t)k);
    if (!blk) {
        dms_cpu_fail(ctx, "matmul_bwd_x", "out of memory");
        dms_cpu_fill_nan(dx, (size_t)n * k);
        return;
    }
    dms_cpu_kernels here;
    const dms_cpu_kernels *kern = kernels_of(ctx, &here);
    if (m == 0 && !accumulate) memset(dx, 0, sizeof(float) * (size_t)n * k);
    for (int r0 = 0; r0 < m; r0 += WIDEN_BLOCK_ROWS) {
        const int rows = m - r0 < WIDEN_BLOCK_ROWS ? m - r0 : WIDEN_BLOCK_ROWS;
        dms_cpu_widen_rows(kern, w, r0, rows, blk);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, k, rows, 1.0f, dy + r0, m, blk, k,
                    r0 == 0 ? beta0 : 1.0f, dx, k);
    }
    free(blk);
}

void dms_cpu_matmul_bwd_w(void *ctx, float *dw, float *db, const float *dy, const float *x, int n,
                          int rows, int cols) {
    (void)ctx;
    if (n <= 0) return;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, cols, n, 1.0f, dy, rows, x, cols, 1.0f,
                dw, cols);
    if (db) {
#pragma omp parallel for schedule(static)
        for (int c0 = 0; c0 < rows; c0 += COL_CHUNK) {
            const int c1 = c0 + COL_CHUNK < rows ? c0 + COL_CHUNK : rows;
            float acc[COL_CHUNK] = {0};
            for (int t = 0; t < n; t++) {
                const float *d = dy + (size_t)t * rows;
                for (int c = c0; c < c1; c++) acc[c - c0] += d[c];
            }
            for (int c = c0; c < c1; c++) db[c] += acc[c - c0];
        }
    }
}
