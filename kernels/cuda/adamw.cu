/* adamw.cu - one AdamW step on an fp32 tensor (decoupled weight decay,
 * bias correction, gradient pre-scaled for clipping). Twin of
 * kernels/cpu/adamw.c: the bias corrections are computed on the host in
 * double exactly as the CPU does, then one thread per element. */
#include "kernels/cuda/cuda_internal.cuh"

__global__ void k_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2,
                        float eps, float weight_decay, float bc1, float bc2, float grad_scale) {
    CU_FOR(i, n) {
        const float gi = g[i] * grad_scale;
        float pi = p[i];
        pi -= lr * weight_decay * pi;
        const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float mhat = mi / bc1, vhat = vi / bc2;
        p[i] = pi - lr * mhat / (sqrtf(vhat) + eps);
    }
}

void cu_adamw(void *ctx, float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
              float beta2, float eps, float weight_decay, int t, float grad_scale) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (!n) return;
    const float bc1 = (float)(1.0 - pow((double)beta1, (double)t));
    const float bc2 = (float)(1.0 - pow((double)beta2, (double)t));
    k_adamw<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, bc1, bc2,
                                                       grad_scale);
    cu_check(c, "adamw");
}
