/* cuda_backend.cu - the op table of kernels/backend.h on an NVIDIA GPU.
 * Matrix products go to cuBLAS (fp32, or bf16 weights with fp32 accumulate);
 * the rest are plain one-pass kernels written to mirror kernels/cpu line for
 * line, because they are checked against it (tests/test_gpu_backend.c). The
 * fused DMS attention kernel replaces `attention` in the training issue. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cuda/cuda_backend.h"

typedef struct cuda_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    __nv_bfloat16 *scratch; /* bf16 copy of activations for bf16 GEMMs */
    size_t scratch_elems;
    float *att_scratch;     /* attention scores */
    size_t att_scratch_elems;
} cuda_ctx;

#define CTX ((cuda_ctx *)ctx)

static void check_cuda(cudaError_t e, const char *what) {
    if (e != cudaSuccess) fprintf(stderr, "dms cuda: %s: %s\n", what, cudaGetErrorString(e));
}

/* ---------------- memory ---------------- */
static void *cu_alloc(void *ctx, size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 64) != cudaSuccess) return NULL;
    cudaMemsetAsync(p, 0, bytes ? bytes : 64, CTX->stream);
    return p;
}
static void cu_free(void *ctx, void *p) {
    (void)ctx;
    if (p) cudaFree(p);
}
static void cu_upload(void *ctx, void *dst, const void *src, size_t bytes) {
    check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, CTX->stream), "upload");
    cudaStreamSynchronize(CTX->stream);
}
static void cu_download(void *ctx, void *dst, const void *src, size_t bytes) {
    check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, CTX->stream), "download");
    cudaStreamSynchronize(CTX->stream);
}
static void cu_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, CTX->stream), "copy");
}
static void cu_sync(void *ctx) { check_cuda(cudaStreamSynchronize(CTX->stream), "sync"); }

static unsigned blocks_for(size_t n, unsigned threads) { return (unsigned)((n + threads - 1) / threads); }

/* ---------------- matmul ---------------- */
__global__ void k_to_bf16(__nv_bfloat16 *out, const float *in, size_t n) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) out[i] = __float2bfloat16(in[i]);
}

__global__ void k_add_bias(float *out, const float *bias, int n, int m) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < (size_t)n * m) out[i] += bias[i % m];
}

static void cu_matmul(void *ctx, float *out, const float *x, const dms_mat *w, const float *bias, int n) {
    const int k = w->cols, m = w->rows;
    const float one = 1.0f, zero = 0.0f;
    /* Row-major out[n,m] = x[n,k] W[m,k]^T is column-major out^T = W^T' x^T. */
    if (w->dtype == DMS_F32) {
        cublasSgemm(CTX->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, (const float *)w->data, k, x, k, &zero,
                    out, m);
    } else {
        size_t need = (size_t)n * k;
        if (need > CTX->scratch_elems) {
            cudaFree(CTX->scratch);
            cudaMalloc((void **)&CTX->scratch, need * sizeof(__nv_bfloat16));
            CTX->scratch_elems = need;
        }
        k_to_bf16<<<blocks_for(need, 256), 256, 0, CTX->stream>>>(CTX->scratch, x, need);
        cublasGemmEx(CTX->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, w->data, CUDA_R_16BF, k, CTX->scratch,
                     CUDA_R_16BF, k, &zero, out, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    }
    if (bias) k_add_bias<<<blocks_for((size_t)n * m, 256), 256, 0, CTX->stream>>>(out, bias, n, m);
}

/* ---------------- rmsnorm ---------------- */
__global__ void k_rmsnorm(float *out, const float *x, const float *w, int dim, float eps) {
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *o = out + (size_t)blockIdx.x * dim;
    __shared__ float partial[32];
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        ss = threadIdx.x < (blockDim.x >> 5) ? partial[threadIdx.x] : 0.0f;
        for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
        if (threadIdx.x == 0) partial[0] = ss;
    }
    __syncthreads();
    const float inv = rsqrtf(partial[0] / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = xr[i] * inv * w[i];
}

static void cu_rmsnorm(void *ctx, float *out, const float *x, const float *w, int rows, int dim, float eps) {
    k_rmsnorm<<<rows, 256, 0, CTX->stream>>>(out, x, w, dim, eps);
}

/* ---------------- rope (rotate-half) ---------------- */
__global__ void k_rope(float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads, int head_dim) {
    const int half = head_dim / 2;
    size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (idx >= (size_t)n * n_heads * half) return;
    const int i = (int)(idx % half);
    const size_t th = idx / half; /* token*heads + head */
    const int t = (int)(th / n_heads);
    float ang = (float)pos[t] * inv_freq[i], s, c;
    sincosf(ang, &s, &c);
    float *v = x + th * head_dim;
    float a = v[i], b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
}

static void cu_rope(void *ctx, float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads,
                    int head_dim) {
    size_t total = (size_t)n * n_heads * (head_dim / 2);
    k_rope<<<blocks_for(total, 256), 256, 0, CTX->stream>>>(x, pos, inv_freq, n, n_heads, head_dim);
}

/* ---------------- attention ---------------- */
/* One block per (query, head): scores to scratch, block softmax, then each
 * thread accumulates its output dimensions. Reference-grade, not fast. */
__global__ void k_attention(float *out, const float *q, const float *k, const float *v, const int32_t *q_pos,
                            int n_kv, int n_heads, int n_kv_heads, int head_dim, float scale, float *scores_all) {
    const int i = blockIdx.x, h = blockIdx.y;
    const int kh = h / (n_heads / n_kv_heads);
    const size_t q_stride = (size_t)n_heads * head_dim, kv_stride = (size_t)n_kv_heads * head_dim;
    const float *qi = q + i * q_stride + (size_t)h * head_dim;
    float *scores = scores_all + ((size_t)i * n_heads + h) * n_kv;
    const int last = q_pos[i] < n_kv - 1 ? q_pos[i] : n_kv - 1;
    __shared__ float red[32];
    __shared__ float bcast;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j <= last; j += blockDim.x) {
        const float *kj = k + j * kv_stride + (size_t)kh * head_dim;
        float s = 0.0f;
        for (int d = 0; d < head_dim; d++) s += qi[d] * kj[d];
        s *= scale;
        scores[j] = s;
        mx = fmaxf(mx, s);
    }
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = mx;
    __syncthreads();
    if (threadIdx.x == 0) {
        float m2 = -INFINITY;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) m2 = fmaxf(m2, red[w]);
        bcast = m2;
    }
    __syncthreads();
    mx = bcast;
    float sum = 0.0f;
    for (int j = threadIdx.x; j <= last; j += blockDim.x) {
        float e = expf(scores[j] - mx);
        scores[j] = e;
        sum += e;
    }
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s2 = 0.0f;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) s2 += red[w];
        bcast = s2;
    }
    __syncthreads();
    const float inv_sum = 1.0f / bcast;
    float *o = out + i * q_stride + (size_t)h * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j <= last; j++) acc += scores[j] * v[j * kv_stride + (size_t)kh * head_dim + d];
        o[d] = acc * inv_sum;
    }
}

static void cu_attention(void *ctx, float *out, const float *q, const float *k, const float *v,
                         const int32_t *q_pos, int n_q, int n_kv, int n_heads, int n_kv_heads, int head_dim,
                         float scale) {
    size_t need = (size_t)n_q * n_heads * n_kv;
    if (need > CTX->att_scratch_elems) {
        cudaFree(CTX->att_scratch);
        cudaMalloc((void **)&CTX->att_scratch, need * sizeof(float));
        CTX->att_scratch_elems = need;
    }
    dim3 grid(n_q, n_heads);
    k_attention<<<grid, 128, 0, CTX->stream>>>(out, q, k, v, q_pos, n_kv, n_heads, n_kv_heads, head_dim, scale,
                                              CTX->att_scratch);
}

/* ---------------- elementwise ---------------- */
__global__ void k_swiglu(float *out, const float *gate, const float *up, size_t n) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
static void cu_swiglu(void *ctx, float *out, const float *gate, const float *up, size_t n) {
    k_swiglu<<<blocks_for(n, 256), 256, 0, CTX->stream>>>(out, gate, up, n);
}

__global__ void k_add(float *y, const float *x, size_t n) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) y[i] += x[i];
}
static void cu_add(void *ctx, float *y, const float *x, size_t n) {
    k_add<<<blocks_for(n, 256), 256, 0, CTX->stream>>>(y, x, n);
}

__global__ void k_embedding(float *out, const void *table, int bf16, const int32_t *ids, int n, int dim) {
    size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (idx >= (size_t)n * dim) return;
    const size_t t = idx / dim, d = idx % dim;
    const size_t src = (size_t)ids[t] * dim + d;
    out[idx] = bf16 ? __bfloat162float(((const __nv_bfloat16 *)table)[src]) : ((const float *)table)[src];
}
static void cu_embedding(void *ctx, float *out, const dms_mat *table, const int32_t *ids, int n) {
    size_t total = (size_t)n * table->cols;
    k_embedding<<<blocks_for(total, 256), 256, 0, CTX->stream>>>(out, table->data, table->dtype == DMS_BF16, ids,
                                                                n, table->cols);
}

/* ---------------- construction ---------------- */
extern "C" int dms_backend_cuda_create(dms_backend *be, int device, dms_err *err) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0)
        return dms_errf(err, "cuda: no usable GPU (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    if (device < 0 || device >= count) return dms_errf(err, "cuda: device %d does not exist (%d found)", device, count);
    cudaSetDevice(device);
    cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof(cuda_ctx));
    c->device = device;
    if (cudaStreamCreate(&c->stream) != cudaSuccess || cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS) {
        free(c);
        return dms_errf(err, "cuda: cannot create stream or cuBLAS handle on device %d", device);
    }
    cublasSetStream(c->blas, c->stream);
    be->name = "cuda";
    be->ctx = c;
    be->alloc = cu_alloc;
    be->free = cu_free;
    be->upload = cu_upload;
    be->download = cu_download;
    be->copy = cu_copy;
    be->sync = cu_sync;
    be->matmul = cu_matmul;
    be->rmsnorm = cu_rmsnorm;
    be->rope = cu_rope;
    be->attention = cu_attention;
    be->swiglu = cu_swiglu;
    be->add = cu_add;
    be->embedding = cu_embedding;
    return 0;
}

extern "C" void dms_backend_cuda_destroy(dms_backend *be) {
    cuda_ctx *c = (cuda_ctx *)be->ctx;
    if (!c) return;
    cudaStreamSynchronize(c->stream);
    cudaFree(c->scratch);
    cudaFree(c->att_scratch);
    cublasDestroy(c->blas);
    cudaStreamDestroy(c->stream);
    free(c);
    be->ctx = NULL;
}
