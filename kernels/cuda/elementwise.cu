/* elementwise.cu - zero, scale, add, axpy, the NaN fill of failed ops, and
 * the two reductions: the sum of squares (read by the host) and the
 * weighted sum kept on the device. Twin of kernels/cpu/elementwise.c. The
 * reductions run in double in two passes (CU_RED_BLOCKS partials, then one
 * block): the order depends on n only, so results are deterministic. */
#include "kernels/cuda/cuda_internal.cuh"

__global__ void k_fill(float *x, float v, size_t n) {
    CU_FOR(i, n) x[i] = v;
}

void cu_fill_nan(cu_ctx *c, float *x, size_t n) {
    if (!x || !n) return;
    k_fill<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(x, __builtin_nanf(""), n);
    cu_check(c, "fill_nan");
}

void cu_zero(void *ctx, float *x, size_t n) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (n) cu_check_err(c, "zero", cudaMemsetAsync(x, 0, n * sizeof *x, c->stream));
}

void cu_zero_f64(void *ctx, double *x, size_t n) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (n) cu_check_err(c, "zero_f64", cudaMemsetAsync(x, 0, n * sizeof *x, c->stream));
}

__global__ void k_scale(float *x, float a, size_t n) {
    CU_FOR(i, n) x[i] *= a;
}

void cu_scale(void *ctx, float *x, float a, size_t n) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (!n) return;
    k_scale<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(x, a, n);
    cu_check(c, "scale");
}

__global__ void k_add(float *y, const float *x, size_t n) {
    CU_FOR(i, n) y[i] += x[i];
}

void cu_add(void *ctx, float *y, const float *x, size_t n) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (!n) return;
    k_add<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(y, x, n);
    cu_check(c, "add");
}

__global__ void k_axpy(float *y, float a, const float *x, size_t n) {
    CU_FOR(i, n) y[i] += a * x[i];
}

void cu_axpy(void *ctx, float *y, float a, const float *x, size_t n) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (!n) return;
    k_axpy<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(y, a, x, n);
    cu_check(c, "axpy");
}

/* Pass 1: part[b] = sum over block b's grid-stride elements of
 * x[i] * (sq ? x[i] : w ? w[i] : 1), in double. */
__global__ void k_sum_partial(double *part, const float *x, const float *w, int sq, size_t n) {
    double s = 0.0;
    CU_FOR(i, n) s += (double)x[i] * (sq ? x[i] : w ? w[i] : 1.0f);
    s = cu_block_sum_d(s);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

/* Pass 2 (one block): the partials in a fixed order; *out = sum or
 * *out += sum. */
__global__ void k_sum_final(double *out, const double *part, int nb, int accumulate) {
    double s = 0.0;
    for (int b = threadIdx.x; b < nb; b += blockDim.x) s += part[b];
    s = cu_block_sum_d(s);
    if (threadIdx.x == 0) *out = accumulate ? *out + s : s;
}

/* Launches both passes: the result lands in *out (device). */
static void block_sum(cu_ctx *c, const char *op, double *out, const float *x, const float *w, int sq,
                      size_t n, int accumulate) {
    unsigned nb = cu_blocks(n);
    if (nb > CU_RED_BLOCKS) nb = CU_RED_BLOCKS;
    k_sum_partial<<<nb, CU_THREADS, 0, c->stream>>>(c->red, x, w, sq, n);
    cu_check(c, op);
    k_sum_final<<<1, CU_THREADS, 0, c->stream>>>(out, c->red, (int)nb, accumulate);
    cu_check(c, op);
}

double cu_sumsq(void *ctx, const float *x, size_t n) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (!n) return 0.0;
    double *slot = c->red + CU_RED_BLOCKS, host = NAN;
    block_sum(c, "sumsq", slot, x, NULL, 1, n, 0);
    cudaError_t e = cudaMemcpyAsync(&host, slot, sizeof host, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        cu_check_err(c, "sumsq", e);
        return NAN;
    }
    return host;
}

void cu_sum_acc(void *ctx, double *acc, const float *x, const float *w, size_t n) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (!n) return;
    block_sum(c, "sum_acc", acc, x, w, 0, n, 1);
}
