/* cuda_internal.cuh - what the CUDA op files share and nothing else sees:
 * the backend context (stream, cuBLAS handle, scratch), the sticky-status
 * helpers every op reports through, launch and block-reduction helpers, and
 * the declarations of the cu_<op> functions that backend_cuda.cu puts in the
 * table. One op (with its backward) per .cu file, mirroring kernels/cpu/. */
#ifndef DMS_CUDA_INTERNAL_CUH
#define DMS_CUDA_INTERNAL_CUH

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

/* Threads per block of the elementwise and row kernels (a multiple of 32:
 * the block reductions below assume whole warps). */
#define CU_THREADS 256
/* Grid cap of the grid-stride elementwise kernels. */
#define CU_MAX_BLOCKS 32768
/* Blocks of the first pass of sumsq / sum_acc: fixed, so that the order of
 * the double partial sums depends on n only. */
#define CU_RED_BLOCKS 1024
/* Upper bound on the per-block score scratch of the attention kernels: the
 * grid is launched in chunks of as many blocks as fit. */
#define CU_ATT_SCRATCH_BYTES ((size_t)128 << 20)

typedef struct cu_lt_plan cu_lt_plan; /* gemm_lt.cu */

typedef struct cu_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *scratch; /* grow-only scratch shared by the ops (they run in stream order) */
    size_t scratch_bytes;
    double *red; /* CU_RED_BLOCKS partial sums + 1 result slot (allocated at create) */
    size_t smem_optin; /* shared memory a block may opt in to (attention_flash.cu) */
    int cc_major;      /* compute capability: mma.sync bf16 needs 8 (attention_mma.cu) */
    int att_fp32;      /* DMS_CUDA_ATTENTION=fp32 at open: training attention on the fp32 kernels */
    cublasLtHandle_t lt; /* bf16 GEMMs (gemm_lt.cu): handle, workspace, one plan per shape */
    void *lt_ws;
    cu_lt_plan *lt_plans;
    int n_lt, cap_lt;
    int failed;  /* sticky status */
    char msg[256];
} cu_ctx;

/* ---- sticky status (backend_cuda.cu) ---- */
/* Records "op: what" unless a failure is already pending. */
void cu_fail(cu_ctx *c, const char *op, const char *what);
/* cudaGetLastError after a launch (or any runtime call): records a failure. */
void cu_check(cu_ctx *c, const char *op);
/* Records a cudaError_t / cublasStatus_t that is not success. */
void cu_check_err(cu_ctx *c, const char *op, cudaError_t e);
void cu_check_blas(cu_ctx *c, const char *op, cublasStatus_t s);
/* The ctx's scratch, at least `bytes` long (grown after a stream sync);
 * NULL with a recorded failure when it cannot be allocated. */
void *cu_scratch(cu_ctx *c, size_t bytes, const char *op);
/* A kernel that needs more than the default 48 KiB of dynamic shared
 * memory asks for `bytes` (attention_flash.cu, attention_mma.cu). */
void cu_smem_opt_in(cu_ctx *c, const void *fn, size_t bytes, const char *op);
/* ---- bf16 GEMM on cuBLASLt (gemm_lt.cu) ----
 * Column-major C[m, n] = op(A) op(B) + beta C with A, B bf16 and C fp32
 * (fp32 accumulation), through the plan cached for the shape. */
void cu_gemm_bf16(cu_ctx *c, const char *op, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                  const void *A, int lda, const void *B, int ldb, float *C, int ldc, float beta);
/* Plans made so far, and how many of them fell back to cublasGemmEx. */
int cu_gemm_plan_count(const cu_ctx *c, int *fallbacks);
/* Releases the handle, the workspace and the plans. */
void cu_lt_free(cu_ctx *c);
/* Fills x[n] with NaN: the output of an op that could not run (elementwise.cu). */
void cu_fill_nan(cu_ctx *c, float *x, size_t n);

/* Blocks of CU_THREADS covering n elements of a grid-stride kernel. */
static inline unsigned cu_blocks(size_t n) {
    size_t b = (n + CU_THREADS - 1) / CU_THREADS;
    return (unsigned)(b < CU_MAX_BLOCKS ? (b ? b : 1) : CU_MAX_BLOCKS);
}

#define CU_FOR(i, n)                                                                  \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)(n); \
         i += (size_t)gridDim.x * blockDim.x)

/* ---- block reductions: every thread calls, every thread gets the result.
 * Fixed tree order for a given blockDim (a multiple of 32), so results are
 * deterministic. The leading __syncthreads lets a kernel call one twice. ---- */
static __device__ __forceinline__ float cu_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ __forceinline__ double cu_warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ __forceinline__ float cu_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* warps reduce, then warp 0 reduces the warps' partials */
#define CU_BLOCK_REDUCE(name, T, warp_fn, identity)                                  \
    static __device__ __forceinline__ T name(T v) {                                  \
        __shared__ T part[32];                                                       \
        __shared__ T total;                                                          \
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5; \
        v = warp_fn(v);                                                              \
        __syncthreads();                                                             \
        if (lane == 0) part[warp] = v;                                               \
        __syncthreads();                                                             \
        if (warp == 0) {                                                             \
            v = warp_fn(lane < nw ? part[lane] : (identity));                        \
            if (lane == 0) total = v;                                                \
        }                                                                            \
        __syncthreads();                                                             \
        return total;                                                                \
    }
CU_BLOCK_REDUCE(cu_block_sum, float, cu_warp_sum, 0.0f)
CU_BLOCK_REDUCE(cu_block_sum_d, double, cu_warp_sum_d, 0.0)
CU_BLOCK_REDUCE(cu_block_max, float, cu_warp_max, -INFINITY)

/* ---- the ops (named cu_<op> after the table's fields; ctx is a cu_ctx) ---- */
/* backend_cuda.cu */
void *cu_alloc(void *ctx, size_t bytes);
void cu_free(void *ctx, void *p);
void cu_upload(void *ctx, void *dst, const void *src, size_t bytes);
void cu_download(void *ctx, void *dst, const void *src, size_t bytes);
void cu_copy(void *ctx, void *dst, const void *src, size_t bytes);
void cu_sync(void *ctx);
int cu_status(void *ctx, char *msg, size_t cap);

/* elementwise.cu */
void cu_zero(void *ctx, float *x, size_t n);
void cu_zero_f64(void *ctx, double *x, size_t n);
void cu_scale(void *ctx, float *x, float a, size_t n);
void cu_add(void *ctx, float *y, const float *x, size_t n);
void cu_axpy(void *ctx, float *y, float a, const float *x, size_t n);
double cu_sumsq(void *ctx, const float *x, size_t n);
void cu_sum_acc(void *ctx, double *acc, const float *x, const float *w, size_t n);

/* matmul.cu */
void cu_matmul(void *ctx, float *out, const float *x, const dms_mat *w, const float *bias, int n);
void cu_matmul_multi(void *ctx, int count, float *const *outs, const float *x, const dms_mat *const *ws,
                     const float *const *biases, int n);
void cu_matmul_bwd_x(void *ctx, float *dx, const float *dy, const dms_mat *w, int n, int accumulate);
void cu_matmul_bwd_w(void *ctx, float *dw, float *db, const float *dy, const float *x, int n, int rows,
                     int cols);

/* rmsnorm.cu */
void cu_rmsnorm(void *ctx, float *out, const float *x, const float *w, int rows, int dim, float eps);
void cu_rmsnorm_bwd(void *ctx, float *dx, float *dw, const float *dy, const float *x, const float *w,
                    int rows, int dim, float eps);

/* rope.cu */
void cu_rope(void *ctx, float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads,
             int head_dim);
void cu_rope_bwd(void *ctx, float *dx, const int32_t *pos, const float *inv_freq, int n, int n_heads,
                 int head_dim);

/* attention.cu */
void cu_attention(void *ctx, float *out, const float *q, const float *k, const float *v,
                  const int32_t *q_pos, int n_q, int n_kv, int n_heads, int n_kv_heads, int head_dim,
                  float scale);

/* attention_paged.cu */
void cu_attention_paged(void *ctx, float *out, const float *q, const int32_t *q_pos, int n_q,
                        const dms_kv_lane_view *lanes, int n_heads, int n_kv_heads, int head_dim, int block_size,
                        int window, float scale);

/* attention_dms.cu */
void cu_attention_dms_fwd(void *ctx, float *out, float *lse, const float *q, const float *k,
                          const float *v, const float *log_keep, const int32_t *seg, int T, int n_heads,
                          int n_kv_heads, int head_dim, int window, float scale);
void cu_attention_dms_bwd(void *ctx, float *dq, float *dk, float *dv, float *dlog_keep,
                          const float *dout, const float *out, const float *lse, const float *q,
                          const float *k, const float *v, const float *log_keep, const int32_t *seg,
                          int T, int n_heads, int n_kv_heads, int head_dim, int window, float scale);

/* attention_mma.cu: the tensor-core (bf16 mma.sync) kernels
 * attention_dms.cu runs first where cu_mma_supported (head dim a multiple
 * of 16 up to 128, sm_80 or later, not DMS_CUDA_ATTENTION=fp32); D from
 * the caller as below */
int cu_mma_supported(const cu_ctx *c, int head_dim);
void cu_mma_dms_fwd(cu_ctx *c, float *out, float *lse, const float *q, const float *k, const float *v,
                    const float *log_keep, const int32_t *seg, int T, int H, int KV, int hd, int window, float scale);
/* scratch: cu_mma_bwd_scratch bytes the caller holds (beside its D) for
 * the bf16 copies of q, dO, k and v */
size_t cu_mma_bwd_scratch(int T, int H, int KV, int hd);
void cu_mma_dms_bwd(cu_ctx *c, void *scratch, float *dq, float *dk, float *dv, float *dlog_keep, const float *dout,
                    const float *lse, const float *D, const float *q, const float *k, const float *v,
                    const float *log_keep, const int32_t *seg, int T, int H, int KV, int hd, int window,
                    float scale);
/* attention_flash.cu: the tiled kernels attention_dms.cu runs where
 * cu_flash_supported (head dim and the device's shared memory allow);
 * D = rowsum(dO * O) comes from the caller */
int cu_flash_supported(const cu_ctx *c, int head_dim);
void cu_flash_dms_fwd(cu_ctx *c, float *out, float *lse, const float *q, const float *k, const float *v,
                      const float *log_keep, const int32_t *seg, int T, int H, int KV, int hd, int window,
                      float scale);
void cu_flash_dms_bwd(cu_ctx *c, float *dq, float *dk, float *dv, float *dlog_keep, const float *dout,
                      const float *lse, const float *D, const float *q, const float *k, const float *v,
                      const float *log_keep, const int32_t *seg, int T, int H, int KV, int hd, int window,
                      float scale);

/* swiglu.cu */
void cu_swiglu(void *ctx, float *out, const float *gate, const float *up, size_t n);
void cu_swiglu_bwd(void *ctx, float *dgate, float *dup, const float *dout, const float *gate,
                   const float *up, size_t n);

/* embedding.cu */
void cu_embedding(void *ctx, float *out, const dms_mat *table, const int32_t *ids, int n);

/* kd.cu */
void cu_kd_chunk(void *ctx, float *loss, float *dzs, const float *zs, const float *zt, const float *weight,
                 int rows, int V, int forward);

/* adamw.cu */
void cu_adamw(void *ctx, float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
              float beta2, float eps, float weight_decay, int t, float grad_scale);

/* attention_dms.cu: attention guidance's statistic */
void cu_attention_future_max(void *ctx, float *imp, const float *q, const float *k, const float *v, const float *lse,
                             const int32_t *seg, int T, int n_heads, int n_kv_heads, int head_dim, int window,
                             float scale, int mean);

/* dms_decide.cu */
void cu_dms_noise(void *ctx, float *noise, int T, int KV, uint64_t seed, int64_t step, int layer,
                  int64_t tok0);
void cu_dms_decide(void *ctx, float *u, float *log_keep, float *hard, const float *z_raw,
                   const float *noise, const int32_t *seg, const int32_t *pos, int sinks, int T, int KV,
                   float scale, float offset, float tau, int per_layer);
void cu_dms_decide_bwd(void *ctx, float *dz_raw, const float *u, const float *dlog_keep,
                       const float *dhard, const int32_t *seg, const int32_t *pos, int sinks, int T, int KV,
                       float scale, float tau, int per_layer);
void cu_dms_comp_grad(void *ctx, float *dhard, int n_dhard, double *comp_acc, double *count, double denom,
                      float target, float weight, float coef);
void cu_dms_guide_grad(void *ctx, float *dz_raw, double *loss_acc, const float *z_raw, const float *target,
                       const float *mask, int T, int KV, float scale, float offset, float coef, int per_layer);

/* dms_neuron.cu */
void cu_dms_neuron_take(void *ctx, float *out, float *q, int T, int n_heads, int n_kv_heads,
                        int head_dim, float keep);
void cu_dms_neuron_put(void *ctx, float *q, const float *in, int T, int n_heads, int n_kv_heads,
                       int head_dim, float keep);

#endif
