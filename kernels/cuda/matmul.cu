/* matmul.cu - x @ W^T against a frozen (bf16) or trainable (fp32) weight,
 * and its two backward products: the input gradient and the fp32 weight
 * gradient. Twin of kernels/cpu/matmul.c, on cuBLAS.
 *
 * Row-major A[r, c] is column-major A^T, so each row-major product below is
 * written as the column-major product of the transposes.
 *
 * bf16 weights (the frozen model): the forward rounds the fp32 activation,
 * and the input gradient the fp32 output gradient, to a bf16 scratch copy
 * and runs the bf16 tensor-core GEMM with fp32 accumulation and fp32 output
 * (cuBLASLt, one cached plan per shape: gemm_lt.cu), as a bf16 trainer
 * does. The CPU oracle keeps those operands in fp32, so the two agree to
 * bf16 rounding of one operand (tests/test_ops.c, TOL_CU_BF16). fp32
 * weights (trainable: adapters, LoRA) and every weight gradient stay fp32
 * (cublasSgemm, no TF32), as the CPU computes them. */
#include "kernels/cuda/cuda_internal.cuh"

__global__ void k_to_bf16(__nv_bfloat16 *out, const float *in, size_t n) {
    CU_FOR(i, n) out[i] = __float2bfloat16(in[i]); /* round to nearest even, as core/half.h */
}

/* out[n, m] += bias[m] */
__global__ void k_add_bias(float *out, const float *bias, size_t n, int m) {
    CU_FOR(i, n * m) out[i] += bias[i % m];
}

/* Column sums down rows, in two deterministic passes: part[rb, c] = sum of
 * rows rb*per .. rb*per+per-1 of column c, then db[c] += sum over rb. */
#define CU_COL_ROWS 256

__global__ void k_colsum_partial(float *part, const float *dy, int n, int cols, int per) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x, rb = blockIdx.y;
    if (c >= cols) return;
    const int r0 = rb * per, r1 = n - r0 < per ? n : r0 + per;
    float s = 0.0f;
    for (int r = r0; r < r1; r++) s += dy[(size_t)r * cols + c];
    part[(size_t)rb * cols + c] = s;
}

__global__ void k_colsum_final(float *db, const float *part, int nrb, int cols) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.0f;
    for (int rb = 0; rb < nrb; rb++) s += part[(size_t)rb * cols + c];
    db[c] += s;
}

/* x[n, k] rounded to bf16 into the scratch (NULL, with `outs` filled with
 * NaN, when the scratch cannot be had). */
static __nv_bfloat16 *x_bf16(cu_ctx *c, const char *op, const float *x, int n, int k, float *const *outs,
                             const dms_mat *const *ws, int count) {
    const size_t nx = (size_t)n * k;
    __nv_bfloat16 *xb = (__nv_bfloat16 *)cu_scratch(c, nx * sizeof(__nv_bfloat16), op);
    if (!xb) {
        for (int i = 0; i < count; i++) cu_fill_nan(c, outs[i], (size_t)n * ws[i]->rows);
        return NULL;
    }
    if (nx) {
        k_to_bf16<<<cu_blocks(nx), CU_THREADS, 0, c->stream>>>(xb, x, nx);
        cu_check(c, op);
    }
    return xb;
}

/* out[n, m] = x W^T (+ bias) with x already in bf16 (xb) for a bf16 weight. */
static void gemm_one(cu_ctx *c, const char *op, float *out, const float *x, const __nv_bfloat16 *xb,
                     const dms_mat *w, const float *bias, int n) {
    const int k = w->cols, m = w->rows;
    const float one = 1.0f, zero = 0.0f;
    /* row-major out[n, m] = x[n, k] W[m, k]^T  <=>  out^T[m, n] = W^T' x^T */
    if (w->dtype == DMS_F32)
        cu_check_blas(c, op,
                      cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, (const float *)w->data, k,
                                  x, k, &zero, out, m));
    else
        cu_gemm_bf16(c, op, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, w->data, k, xb, k, out, m, 0.0f);
    if (bias) {
        k_add_bias<<<cu_blocks((size_t)n * m), CU_THREADS, 0, c->stream>>>(out, bias, (size_t)n, m);
        cu_check(c, op);
    }
}

void cu_matmul(void *ctx, float *out, const float *x, const dms_mat *w, const float *bias, int n) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (n <= 0 || w->rows <= 0) return;
    const __nv_bfloat16 *xb = NULL;
    if (w->dtype != DMS_F32 && !(xb = x_bf16(c, "matmul", x, n, w->cols, &out, &w, 1))) return;
    gemm_one(c, "matmul", out, x, xb, w, bias, n);
}

/* One bf16 copy of x for every bf16 weight among ws (they share x's
 * width); fp32 weights take x as it is. The same values as cu_matmul per
 * weight: the same rounding of x, the same GEMM plans. */
void cu_matmul_multi(void *ctx, int count, float *const *outs, const float *x, const dms_mat *const *ws,
                     const float *const *biases, int n) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (n <= 0 || count <= 0) return;
    int lowp = 0;
    for (int i = 0; i < count; i++) lowp |= ws[i]->dtype != DMS_F32 && ws[i]->rows > 0;
    const __nv_bfloat16 *xb = NULL;
    if (lowp && !(xb = x_bf16(c, "matmul_multi", x, n, ws[0]->cols, outs, ws, count))) return;
    for (int i = 0; i < count; i++)
        if (ws[i]->rows > 0) gemm_one(c, "matmul_multi", outs[i], x, xb, ws[i], biases ? biases[i] : NULL, n);
}

void cu_matmul_bwd_x(void *ctx, float *dx, const float *dy, const dms_mat *w, int n, int accumulate) {
    cu_ctx *c = (cu_ctx *)ctx;
    const int m = w->rows, k = w->cols;
    const float one = 1.0f, beta0 = accumulate ? 1.0f : 0.0f;
    if (n <= 0 || k <= 0) return;
    if (m <= 0) { /* empty sum */
        if (!accumulate) cu_zero(ctx, dx, (size_t)n * k);
        return;
    }
    /* row-major dx[n, k] (+)= dy[n, m] W[m, k]  <=>  dx^T[k, n] = W^T[k, m] dy^T[m, n] */
    if (w->dtype == DMS_F32) {
        cu_check_blas(c, "matmul_bwd_x",
                      cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, k, n, m, &one, (const float *)w->data, k,
                                  dy, m, &beta0, dx, k));
        return;
    }
    /* bf16: dx (+)= bf16(dy) W, fp32 accumulation */
    const size_t ny = (size_t)n * m;
    __nv_bfloat16 *dyb = (__nv_bfloat16 *)cu_scratch(c, ny * sizeof(__nv_bfloat16), "matmul_bwd_x");
    if (!dyb) {
        cu_fill_nan(c, dx, (size_t)n * k);
        return;
    }
    k_to_bf16<<<cu_blocks(ny), CU_THREADS, 0, c->stream>>>(dyb, dy, ny);
    cu_check(c, "matmul_bwd_x");
    cu_gemm_bf16(c, "matmul_bwd_x", CUBLAS_OP_N, CUBLAS_OP_N, k, n, m, w->data, k, dyb, m, dx, k, beta0);
}

void cu_matmul_bwd_w(void *ctx, float *dw, float *db, const float *dy, const float *x, int n, int rows,
                     int cols) {
    cu_ctx *c = (cu_ctx *)ctx;
    const float one = 1.0f;
    if (n <= 0 || rows <= 0) return;
    /* row-major dw[rows, cols] += dy[n, rows]^T x[n, cols]
     * <=> dw^T[cols, rows] += x^T[cols, n] dy[n, rows] (dy^T read transposed) */
    if (cols > 0)
        cu_check_blas(c, "matmul_bwd_w",
                      cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, cols, rows, n, &one, x, cols, dy, rows, &one,
                                  dw, cols));
    if (db) {
        int per = CU_COL_ROWS;
        if ((n + per - 1) / per > 65535) per = (n + 65534) / 65535; /* gridDim.y limit */
        const int nrb = (n + per - 1) / per;
        float *part = (float *)cu_scratch(c, sizeof(float) * (size_t)nrb * rows, "matmul_bwd_w");
        if (!part) {
            cu_fill_nan(c, db, (size_t)rows);
            return;
        }
        const dim3 grid((unsigned)((rows + CU_THREADS - 1) / CU_THREADS), (unsigned)nrb);
        k_colsum_partial<<<grid, CU_THREADS, 0, c->stream>>>(part, dy, n, rows, per);
        cu_check(c, "matmul_bwd_w");
        k_colsum_final<<<grid.x, CU_THREADS, 0, c->stream>>>(db, part, nrb, rows);
        cu_check(c, "matmul_bwd_w");
    }
}
