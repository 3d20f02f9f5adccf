/* rmsnorm.cu - RMSNorm over rows (also per head: Qwen3 q/k norm) and its
 * backward with the weight gradient. Twin of kernels/cpu/rmsnorm.c: one
 * block per row, the sums of squares in double like the CPU; the weight
 * gradient is a two-pass column reduction (deterministic, no atomics). */
#include "kernels/cuda/cuda_internal.cuh"

/* Rows per partial of the weight-gradient column reduction. */
#define CU_NORM_ROWS 256

/* 1 / rms of row xr, exactly as the CPU forward computes it. */
static __device__ __forceinline__ float row_rinv(const float *xr, int dim, float eps) {
    double ss = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += (double)xr[i] * xr[i];
    ss = cu_block_sum_d(ss);
    return 1.0f / sqrtf((float)(ss / dim) + eps);
}

__global__ void k_rmsnorm(float *out, const float *x, const float *w, int dim, float eps) {
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *o = out + (size_t)blockIdx.x * dim;
    const float inv = row_rinv(xr, dim, eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = xr[i] * inv * w[i];
}

void cu_rmsnorm(void *ctx, float *out, const float *x, const float *w, int rows, int dim, float eps) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (rows <= 0 || dim <= 0) return;
    k_rmsnorm<<<rows, CU_THREADS, 0, c->stream>>>(out, x, w, dim, eps);
    cu_check(c, "rmsnorm");
}

__global__ void k_rmsnorm_rinv(float *rinv, const float *x, int dim, float eps) {
    const float r = row_rinv(x + (size_t)blockIdx.x * dim, dim, eps);
    if (threadIdx.x == 0) rinv[blockIdx.x] = r;
}

/* part[rb, c] = sum over rows of block rb of dy * x * rinv (column c) */
__global__ void k_rmsnorm_dw_partial(float *part, const float *dy, const float *x, const float *rinv, int rows,
                                     int dim, int per) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x, rb = blockIdx.y;
    if (c >= dim) return;
    const int r0 = rb * per, r1 = rows - r0 < per ? rows : r0 + per;
    float s = 0.0f;
    for (int r = r0; r < r1; r++) s += dy[(size_t)r * dim + c] * x[(size_t)r * dim + c] * rinv[r];
    part[(size_t)rb * dim + c] = s;
}

__global__ void k_rmsnorm_dw_final(float *dw, const float *part, int nrb, int dim) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= dim) return;
    float s = 0.0f;
    for (int rb = 0; rb < nrb; rb++) s += part[(size_t)rb * dim + c];
    dw[c] += s;
}

/* One block per row. Every thread reads its dy elements for the dot before
 * the reduction's barriers and writes only those elements after: dx may
 * alias dy. */
__global__ void k_rmsnorm_dx(float *dx, const float *dy, const float *x, const float *w, const float *rinv,
                             int dim) {
    const size_t off = (size_t)blockIdx.x * dim;
    const float *xr = x + off, *dr = dy + off;
    float *o = dx + off;
    double dot = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dot += (double)w[i] * dr[i] * xr[i];
    dot = cu_block_sum_d(dot);
    const float ri = rinv[blockIdx.x];
    const float coef = (float)(dot * ri * ri * ri / dim);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = ri * w[i] * dr[i] - xr[i] * coef;
}

void cu_rmsnorm_bwd(void *ctx, float *dx, float *dw, const float *dy, const float *x, const float *w,
                    int rows, int dim, float eps) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (rows <= 0 || dim <= 0) return;
    int per = CU_NORM_ROWS;
    if ((rows + per - 1) / per > 65535) per = (rows + 65534) / 65535; /* gridDim.y limit */
    const int nrb = (rows + per - 1) / per;
    const size_t rinv_bytes = ((sizeof(float) * (size_t)rows + 255) / 256) * 256;
    const size_t part_bytes = dw ? sizeof(float) * (size_t)nrb * dim : 0;
    char *scr = (char *)cu_scratch(c, rinv_bytes + part_bytes, "rmsnorm_bwd");
    if (!scr) {
        cu_fill_nan(c, dx, (size_t)rows * dim);
        return;
    }
    float *rinv = (float *)scr, *part = (float *)(scr + rinv_bytes);
    k_rmsnorm_rinv<<<rows, CU_THREADS, 0, c->stream>>>(rinv, x, dim, eps);
    cu_check(c, "rmsnorm_bwd");
    if (dw) { /* before dx: dx may alias dy */
        const dim3 grid((unsigned)((dim + CU_THREADS - 1) / CU_THREADS), (unsigned)nrb);
        k_rmsnorm_dw_partial<<<grid, CU_THREADS, 0, c->stream>>>(part, dy, x, rinv, rows, dim, per);
        cu_check(c, "rmsnorm_bwd");
        k_rmsnorm_dw_final<<<grid.x, CU_THREADS, 0, c->stream>>>(dw, part, nrb, dim);
        cu_check(c, "rmsnorm_bwd");
    }
    k_rmsnorm_dx<<<rows, CU_THREADS, 0, c->stream>>>(dx, dy, x, w, rinv, dim);
    cu_check(c, "rmsnorm_bwd");
}
