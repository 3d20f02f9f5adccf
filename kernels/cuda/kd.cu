/* kd.cu - distillation on a chunk of LM-head rows: KL(student || teacher)
 * (NVIDIA's) or KL(teacher || student) per row and its gradient w.r.t. the
 * student logits. Twin of kernels/cpu/kd.c: one block per row, max in
 * float, log-sum-exp and KL in double; block tree reductions
 * (deterministic). */
#include "kernels/cuda/cuda_internal.cuh"

/* log-sum-exp of a row, max-shifted, double accumulation (all threads). */
static __device__ __forceinline__ double row_lse(const float *z, int V) {
    float mx = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) mx = z[v] > mx ? z[v] : mx;
    mx = cu_block_max(mx);
    double s = 0.0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) s += exp((double)z[v] - mx);
    s = cu_block_sum_d(s);
    return mx + log(s);
}

/* Every read of the row zs happens before the KL reduction's barriers, and
 * afterwards each thread reads s[v] before writing g[v]: dzs may alias zs. */
__global__ void k_kd_chunk(float *loss, float *dzs, const float *zs, const float *zt, const float *weight, int V,
                           int forward) {
    const size_t r = blockIdx.x;
    const float *s = zs + r * V, *t = zt + r * V;
    const double ls = row_lse(s, V), lt = row_lse(t, V);
    double kl = 0.0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        const double lps = s[v] - ls, lpt = t[v] - lt;
        kl += forward ? exp(lpt) * (lpt - lps) : exp(lps) * (lps - lpt);
    }
    kl = cu_block_sum_d(kl);
    if (loss && threadIdx.x == 0) loss[r] = (float)kl;
    if (dzs) {
        const double wr = weight ? weight[r] : 1.0;
        float *g = dzs + r * V;
        for (int v = threadIdx.x; v < V; v += blockDim.x) {
            const double lps = s[v] - ls, lpt = t[v] - lt;
            g[v] = (float)(wr * (forward ? exp(lps) - exp(lpt) : exp(lps) * ((lps - lpt) - kl)));
        }
    }
}

void cu_kd_chunk(void *ctx, float *loss, float *dzs, const float *zs, const float *zt, const float *weight,
                 int rows, int V, int forward) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (rows <= 0 || (!loss && !dzs)) return;
    k_kd_chunk<<<rows, CU_THREADS, 0, c->stream>>>(loss, dzs, zs, zt, weight, V, forward);
    cu_check(c, "kd_chunk");
}
