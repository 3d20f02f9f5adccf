/* adamw.c - one AdamW step on an fp32 tensor (decoupled weight decay,
 * bias correction, gradient pre-scaled for clipping). */
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

void dms_cpu_adamw(void *ctx, float *p, const float *g, float *m, float *v, size_t n, float lr,
                   float beta1, float beta2, float eps, float weight_decay, int t, float grad_scale) {
    (void)ctx;
    const float bc1 = (float)(1.0 - pow((double)beta1, (double)t));
    const float bc2 = (float)(1.0 - pow((double)beta2, (double)t));
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        const float gi = g[i] * grad_scale;
        float pi = p[i];
        pi -= lr * weight_decay * pi;
        m[i] = beta1 * m[i] + (1.0f - beta1) * gi;
        v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        const float mhat = m[i] / bc1, vhat = v[i] / bc2;
        p[i] = pi - lr * mhat / (sqrtf(vhat) + eps);
    }
}
