/* dms_neuron.c - the neuron variant's decision channel: gather (and
 * zero, or fade) channel D-1 of the first query head of each KV group, and
 * put a value back into it. */
#include "kernels/cpu/cpu_ops.h"

void dms_cpu_dms_neuron_take(void *ctx, float *out, float *q, int T, int n_heads, int n_kv_heads, int head_dim,
                             float keep) {
    (void)ctx;
    const int group = n_heads / n_kv_heads;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < n_kv_heads; h++) {
            float *c = q + (size_t)t * n_heads * head_dim + (size_t)h * group * head_dim + head_dim - 1;
            if (out) out[(size_t)t * n_kv_heads + h] = *c;
            if (keep != 1.0f) *c = keep == 0.0f ? 0.0f : keep * *c;
        }
}

void dms_cpu_dms_neuron_put(void *ctx, float *q, const float *in, int T, int n_heads, int n_kv_heads,
                            int head_dim, float keep) {
    (void)ctx;
    const int group = n_heads / n_kv_heads;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < n_kv_heads; h++) {
            float *c = q + (size_t)t * n_heads * head_dim + (size_t)h * group * head_dim + head_dim - 1;
            const float v = in[(size_t)t * n_kv_heads + h];
            *c = keep == 0.0f ? v : keep * *c + v;
        }
}
