/* rope.c - rotary position embedding (rotate-half pairing, as Hugging
 * Face) and its backward, the rotation by the opposite angle. */
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

void dms_cpu_rotate_half(float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads, int head_dim,
                         float dir) {
    const int half = head_dim / 2;
#pragma omp parallel for if (n > 4)
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < half; i++) {
            float ang = (float)pos[t] * inv_freq[i];
            float c = cosf(ang), s = dir * sinf(ang);
            for (int h = 0; h < n_heads; h++) {
                float *v = x + ((size_t)t * n_heads + h) * head_dim;
                float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

void dms_cpu_rope(void *ctx, float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads,
                  int head_dim) {
    (void)ctx;
    dms_cpu_rotate_half(x, pos, inv_freq, n, n_heads, head_dim, 1.0f);
}

void dms_cpu_rope_bwd(void *ctx, float *dx, const int32_t *pos, const float *inv_freq, int n,
                      int n_heads, int head_dim) {
    (void)ctx;
    /* A rotation's transpose is the rotation by the opposite angle. */
    dms_cpu_rotate_half(dx, pos, inv_freq, n, n_heads, head_dim, -1.0f);
}
