/* attention.c - causal grouped-query attention of new queries against a
 * KV cache (generation and prefill). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

void dms_cpu_attention(void *ctx, float *out, const float *q, const float *k, const float *v,
                       const int32_t *q_pos, int n_q, int n_kv, int n_heads, int n_kv_heads,
                       int head_dim, float scale) {
    (void)ctx;
    const int group = n_heads / n_kv_heads;
    const size_t q_stride = (size_t)n_heads * head_dim, kv_stride = (size_t)n_kv_heads * head_dim;
#pragma omp parallel
    {
        float *scores = malloc(sizeof(float) * (size_t)(n_kv > 0 ? n_kv : 1));
#pragma omp for collapse(2) schedule(dynamic)
        for (int i = 0; i < n_q; i++) {
            for (int h = 0; h < n_heads; h++) {
                const float *qi = q + i * q_stride + (size_t)h * head_dim;
                const int kh = h / group;
                int last = q_pos[i] < n_kv - 1 ? q_pos[i] : n_kv - 1;
                float mx = -INFINITY;
                for (int j = 0; j <= last; j++) {
                    const float *kj = k + j * kv_stride + (size_t)kh * head_dim;
                    float s = 0.0f;
                    for (int d = 0; d < head_dim; d++) s += qi[d] * kj[d];
                    s *= scale;
                    scores[j] = s;
                    if (s > mx) mx = s;
                }
                float sum = 0.0f;
                for (int j = 0; j <= last; j++) {
                    scores[j] = expf(scores[j] - mx);
                    sum += scores[j];
                }
                float *o = out + i * q_stride + (size_t)h * head_dim;
                memset(o, 0, sizeof(float) * head_dim);
                for (int j = 0; j <= last; j++) {
                    const float p = scores[j] / sum;
                    const float *vj = v + j * kv_stride + (size_t)kh * head_dim;
                    for (int d = 0; d < head_dim; d++) o[d] += p * vj[d];
                }
            }
        }
        free(scores);
    }
}
