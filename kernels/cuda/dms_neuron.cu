/* dms_neuron.cu - the neuron variant's decision channel: gather (and
 * zero, or fade) channel head_dim-1 of the first query head of each KV group, and
 * put a value back into it. Twin of kernels/cpu/dms_neuron.c: one thread
 * per (token, KV head). */
#include "kernels/cuda/cuda_internal.cuh"

/* Offset of (t, kv head h)'s decision channel in q[T, n_heads*head_dim]. */
static __device__ __forceinline__ size_t neuron_at(size_t t, int h, int n_heads, int group, int head_dim) {
    return t * n_heads * head_dim + (size_t)h * group * head_dim + head_dim - 1;
}

__global__ void k_neuron_take(float *out, float *q, int T, int n_heads, int n_kv_heads, int head_dim, float keep) {
    const int group = n_heads / n_kv_heads;
    CU_FOR(idx, (size_t)T * n_kv_heads) {
        const size_t t = idx / n_kv_heads;
        const int h = (int)(idx % n_kv_heads);
        float *ch = q + neuron_at(t, h, n_heads, group, head_dim);
        if (out) out[idx] = *ch;
        if (keep != 1.0f) *ch = keep == 0.0f ? 0.0f : keep * *ch;
    }
}

__global__ void k_neuron_put(float *q, const float *in, int T, int n_heads, int n_kv_heads, int head_dim,
                             float keep) {
    const int group = n_heads / n_kv_heads;
    CU_FOR(idx, (size_t)T * n_kv_heads) {
        const size_t t = idx / n_kv_heads;
        const int h = (int)(idx % n_kv_heads);
        float *ch = q + neuron_at(t, h, n_heads, group, head_dim);
        /* no fused multiply-add: the CPU rounds the product first, and the two must agree bit for bit */
        *ch = keep == 0.0f ? in[idx] : __fadd_rn(__fmul_rn(keep, *ch), in[idx]);
    }
}

void cu_dms_neuron_take(void *ctx, float *out, float *q, int T, int n_heads, int n_kv_heads, int head_dim,
                        float keep) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (T <= 0 || n_kv_heads <= 0 || (!out && keep == 1.0f)) return;
    k_neuron_take<<<cu_blocks((size_t)T * n_kv_heads), CU_THREADS, 0, c->stream>>>(out, q, T, n_heads, n_kv_heads,
                                                                                  head_dim, keep);
    cu_check(c, "dms_neuron_take");
}

void cu_dms_neuron_put(void *ctx, float *q, const float *in, int T, int n_heads, int n_kv_heads, int head_dim,
                      float keep) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (T <= 0 || n_kv_heads <= 0) return;
    k_neuron_put<<<cu_blocks((size_t)T * n_kv_heads), CU_THREADS, 0, c->stream>>>(q, in, T, n_heads, n_kv_heads,
                                                                                 head_dim, keep);
    cu_check(c, "dms_neuron_put");
}
