/* attention.cu - causal grouped-query attention of new queries against a
 * KV cache (generation and prefill). Twin of kernels/cpu/attention.c.
 * Reference-grade (the fused flash kernel comes later): one block per
 * (query, head) writes its scaled scores to a [n_kv] row of global scratch,
 * takes a block softmax, and each thread accumulates its output channels
 * over the keys in order. The grid runs in chunks of as many blocks as
 * CU_ATT_SCRATCH_BYTES of score rows allow. Deterministic (fixed-order
 * block reductions, no atomics). */
#include "kernels/cuda/cuda_internal.cuh"

#define CU_ATT_THREADS 128

__global__ void k_attention(float *out, const float *q, const float *k, const float *v, const int32_t *q_pos,
                            int n_kv, int n_heads, int n_kv_heads, int head_dim, float scale, float *scores_base,
                            size_t b0) {
    extern __shared__ float qs[]; /* [head_dim]: this block's query */
    const size_t b = b0 + blockIdx.x, i = b / n_heads;
    const int h = (int)(b % n_heads), kh = h / (n_heads / n_kv_heads);
    const size_t q_stride = (size_t)n_heads * head_dim, kv_stride = (size_t)n_kv_heads * head_dim;
    const float *qi = q + i * q_stride + (size_t)h * head_dim;
    float *scores = scores_base + (size_t)blockIdx.x * (n_kv > 0 ? n_kv : 1);
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) qs[d] = qi[d];
    __syncthreads();
    const int last = q_pos[i] < n_kv - 1 ? q_pos[i] : n_kv - 1;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j <= last; j += blockDim.x) {
        const float *kj = k + (size_t)j * kv_stride + (size_t)kh * head_dim;
        float s = 0.0f;
        for (int d = 0; d < head_dim; d++) s += qs[d] * kj[d];
        s *= scale;
        scores[j] = s;
        mx = s > mx ? s : mx;
    }
    mx = cu_block_max(mx);
    float sum = 0.0f;
    for (int j = threadIdx.x; j <= last; j += blockDim.x) {
        const float e = expf(scores[j] - mx);
        scores[j] = e;
        sum += e;
    }
    sum = cu_block_sum(sum);
    for (int j = threadIdx.x; j <= last; j += blockDim.x) scores[j] = scores[j] / sum;
    __syncthreads();
    float *o = out + i * q_stride + (size_t)h * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j <= last; j++) acc += scores[j] * v[(size_t)j * kv_stride + (size_t)kh * head_dim + d];
        o[d] = acc;
    }
}

void cu_attention(void *ctx, float *out, const float *q, const float *k, const float *v, const int32_t *q_pos,
                  int n_q, int n_kv, int n_heads, int n_kv_heads, int head_dim, float scale) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (n_q <= 0 || n_heads <= 0 || head_dim <= 0) return;
    const size_t total = (size_t)n_q * n_heads, row = (size_t)(n_kv > 0 ? n_kv : 1);
    size_t chunk = CU_ATT_SCRATCH_BYTES / (sizeof(float) * row);
    if (chunk < 1) chunk = 1;
    if (chunk > total) chunk = total;
    float *scores = (float *)cu_scratch(c, sizeof(float) * row * chunk, "attention");
    if (!scores) {
        cu_fill_nan(c, out, total * head_dim);
        return;
    }
    const size_t shmem = sizeof(float) * (size_t)head_dim;
    for (size_t b0 = 0; b0 < total; b0 += chunk) {
        const size_t nb = total - b0 < chunk ? total - b0 : chunk;
        k_attention<<<(unsigned)nb, CU_ATT_THREADS, shmem, c->stream>>>(out, q, k, v, q_pos, n_kv, n_heads, n_kv_heads,
                                                                       head_dim, scale, scores, b0);
        cu_check(c, "attention");
    }
}
