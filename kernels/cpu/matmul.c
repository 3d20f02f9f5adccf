/* matmul.c - x @ W^T against a frozen or trainable weight (fp32 through
 * OpenBLAS; bf16 weights widened a block of rows at a time), and its two
 * backward products: the input gradient and the (fp32) weight gradient. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "kernels/cpu/cpu_ops.h"

/* Columns per task when a reduction runs down the rows of a matrix. */
#define COL_CHUNK 64
#define BF16_BLOCK_ROWS DMS_CPU_BF16_BLOCK_ROWS

void dms_cpu_matmul(void *ctx, float *out, const float *x, const dms_mat *w, const float *bias, int n) {
    (void)ctx;
    const int k = w->cols, m = w->rows;
    if (w->dtype == DMS_F32) {
        const float *W = w->data;
        if (n == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, m, k, 1.0f, W, k, x, 1, 0.0f, out, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, k, 1.0f, x, k, W, k, 0.0f,
                        out, m);
    } else { /* DMS_BF16: widen a block of rows at a time, then the same BLAS call */
        const uint16_t *W = w->data;
        float *blk = malloc(sizeof(float) * (size_t)BF16_BLOCK_ROWS * (size_t)k);
        if (!blk) {
            dms_cpu_fail(ctx, "matmul", "out of memory");
            dms_cpu_fill_nan(out, (size_t)n * m);
            return;
        }
        for (int r0 = 0; r0 < m; r0 += BF16_BLOCK_ROWS) {
            int rows = m - r0 < BF16_BLOCK_ROWS ? m - r0 : BF16_BLOCK_ROWS;
#pragma omp parallel for
            for (long i = 0; i < (long)rows * k; i++) blk[i] = dms_bf16_to_f32(W[(size_t)r0 * k + i]);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, rows, k, 1.0f, x, k, blk, k, 0.0f,
                        out + r0, m);
        }
        free(blk);
    }
    if (bias) {
#pragma omp parallel for if (n > 4)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++) out[(size_t)i * m + j] += bias[j];
    }
}

void dms_cpu_matmul_bwd_x(void *ctx, float *dx, const float *dy, const dms_mat *w, int n, int accumulate) {
    (void)ctx;
    const int m = w->rows, k = w->cols;
    if (n <= 0) return;
    const float beta0 = accumulate ? 1.0f : 0.0f;
    if (w->dtype == DMS_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, k, m, 1.0f, dy, m, w->data, k, beta0,
                    dx, k);
        return;
    }
    /* DMS_BF16: dx (+)= sum over row blocks of dy[:, blk] @ W[blk, :] */
    const uint16_t *W = w->data;
    float *blk = malloc(sizeof(float) * (size_t)BF16_BLOCK_ROWS * (size_t)k);
    if (!blk) {
        dms_cpu_fail(ctx, "matmul_bwd_x", "out of memory");
        dms_cpu_fill_nan(dx, (size_t)n * k);
        return;
    }
    if (m == 0 && !accumulate) memset(dx, 0, sizeof(float) * (size_t)n * k);
    for (int r0 = 0; r0 < m; r0 += BF16_BLOCK_ROWS) {
        const int rows = m - r0 < BF16_BLOCK_ROWS ? m - r0 : BF16_BLOCK_ROWS;
#pragma omp parallel for
        for (long i = 0; i < (long)rows * k; i++) blk[i] = dms_bf16_to_f32(W[(size_t)r0 * k + i]);
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
