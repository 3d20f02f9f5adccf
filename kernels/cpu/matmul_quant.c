/* matmul_quant.c - y = x W^T for a weight kept in its file dtype
 * (kernels/cpu/quant.h): the dot kernels of the backend's instruction set
 * for few rows of x, fp32 tiles of W through OpenBLAS sgemm for many.
 *
 * Dot path: the rows of x are quantised once (quant_act.c), then OpenMP
 * threads take tiles of rows of W, each row meeting every row of x while
 * it sits in L1. Widen path: a tile of rows of W is widened to fp32
 * exactly (the ISA's widening kernels, OpenMP over rows) and multiplied by
 * sgemm (OpenBLAS's own threads, never inside our parallel region: no
 * oversubscription), so a prefill gives the dequantised model's fp32
 * result. Per call the dot path costs about n matrix-vector products and
 * the widen path one widening plus an sgemm: measured (1 thread, Q4_1
 * 576 x 1536 and Q8_0 49152 x 576, AVX-512 VNNI) the dots are faster up
 * to 8 rows of x, even at 8-16, slower from 12-16 on (2x at 64). Hence
 * DMS_CPU_DOT_MAX_N. F16 and BF16 weights use the dot path for n = 1 only. */
#include <cblas.h>
#include <stdlib.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/quant.h"
#include "kernels/dtype.h"

/* Rows of x up to which the dot path runs (quantised dtypes). */
#define DMS_CPU_DOT_MAX_N 8
/* Rows of W per task of the dot path. */
#define DOT_ROW_TILE 8
/* fp32 elements per widened tile of W (4 MiB). */
#define WIDEN_TILE_ELEMS (1u << 20)

void dms_cpu_widen_rows(const dms_cpu_kernels *kern, const dms_mat *w, int r0, int rows, float *dst) {
    const int k = w->cols, nb = k / dms_dtype_block(w->dtype);
    const size_t rb = dms_dtype_bytes(w->dtype, (size_t)k);
    const char *src = (const char *)w->data + (size_t)r0 * rb;
    const dms_cpu_widen_fn widen = kern->widen[w->dtype];
    if (!widen) { /* F32 */
        dms_dtype_to_f32(w->dtype, src, dst, (size_t)rows * k);
        return;
    }
#pragma omp parallel for schedule(static) if (rows > 16)
    for (int r = 0; r < rows; r++) widen(src + (size_t)r * rb, dst + (size_t)r * k, nb);
}

static void matmul_widen(const dms_cpu_kernels *kern, void *ctx, float *out, const float *x, const dms_mat *w,
                         int n) {
    const int m = w->rows, k = w->cols;
    int tile = k > 0 ? (int)(WIDEN_TILE_ELEMS / (unsigned)k) : m;
    if (tile < 1) tile = 1;
    if (tile > m) tile = m;
    float *blk = malloc(sizeof(float) * (size_t)tile * (size_t)k);
    if (!blk) {
        dms_cpu_fail(ctx, "matmul", "out of memory");
        dms_cpu_fill_nan(out, (size_t)n * m);
        return;
    }
    for (int r0 = 0; r0 < m; r0 += tile) {
        const int rows = m - r0 < tile ? m - r0 : tile;
        dms_cpu_widen_rows(kern, w, r0, rows, blk);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, rows, k, 1.0f, x, k, blk, k, 0.0f, out + r0, m);
    }
    free(blk);
}

static void matmul_dots(dms_cpu_dot_fn dot, void *ctx, float *out, const float *x, const dms_mat *w, int n) {
    const int m = w->rows, k = w->cols, nb = k / dms_dtype_block(w->dtype);
    const size_t rb = dms_dtype_bytes(w->dtype, (size_t)k), ab = dms_cpu_act_bytes(w->dtype, k);
    const int widened = w->dtype == DMS_F16 || w->dtype == DMS_BF16; /* dotted with x itself */
    char *act = widened ? (char *)x : malloc(ab * (size_t)n);
    if (!act) {
        dms_cpu_fail(ctx, "matmul", "out of memory");
        dms_cpu_fill_nan(out, (size_t)n * m);
        return;
    }
    if (!widened) {
#pragma omp parallel for schedule(static) if (n > 1)
        for (int i = 0; i < n; i++) dms_cpu_act_quantize(w->dtype, x + (size_t)i * k, act + (size_t)i * ab, k);
    }
    const char *W = w->data;
    const int tiles = (m + DOT_ROW_TILE - 1) / DOT_ROW_TILE;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < tiles; t++) {
        const int r0 = t * DOT_ROW_TILE, r1 = r0 + DOT_ROW_TILE < m ? r0 + DOT_ROW_TILE : m;
        for (int i = 0; i < n; i++)
            for (int r = r0; r < r1; r++)
                out[(size_t)i * m + r] = dot(W + (size_t)r * rb, act + (size_t)i * ab, nb);
    }
    if (!widened) free(act);
}

void dms_cpu_matmul_kept(const dms_cpu_kernels *kern, void *ctx, float *out, const float *x, const dms_mat *w, int n,
                         dms_cpu_kept_path path) {
    if (n <= 0 || w->rows <= 0) return;
    const dms_cpu_dot_fn dot = kern->dot[w->dtype];
    const int widened = w->dtype == DMS_F16 || w->dtype == DMS_BF16;
    int use_dots = dot && (widened ? n == 1 : n <= DMS_CPU_DOT_MAX_N);
    if (path != DMS_CPU_KEPT_AUTO) use_dots = dot && path == DMS_CPU_KEPT_DOTS;
    if (use_dots)
        matmul_dots(dot, ctx, out, x, w, n);
    else
        matmul_widen(kern, ctx, out, x, w, n);
}
