/* attention_paged.c - attention of a sequence's new queries against its
 * paged, ragged per-KV-head caches (runtime/kv_paged.c), with the DMS
 * visibility rule, and the per-key probability sums that TOVA and H2O
 * evict by. One work item per (query, head); the score sums are added per
 * KV head in a fixed order afterwards, so results do not depend on threads. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

static inline int visible(const dms_kv_lane_view *ln, int s, int qp, int window) {
    const int p = ln->pos[s];
    return p <= qp && (qp - p <= window || !ln->flag || !ln->flag[s]);
}

void dms_cpu_attention_paged(void *ctx, float *out, const float *q, const int32_t *q_pos, int n_q,
                             const dms_kv_lane_view *lanes, int n_heads, int n_kv_heads, int head_dim, int block_size,
                             int window, float scale) {
    const int group = n_heads / n_kv_heads;
    int max_n = 1;
    for (int h = 0; h < n_kv_heads; h++) max_n = lanes[h].n > max_n ? lanes[h].n : max_n;
    const int want_scores = lanes[0].score != NULL;
    /* probabilities of every (query, head) when scores are wanted */
    float *probs = want_scores ? malloc(sizeof(float) * (size_t)n_q * n_heads * max_n) : NULL;
    int oom = want_scores && !probs;
#pragma omp parallel if (!oom)
    {
        float *sc = oom ? NULL : malloc(sizeof(float) * (size_t)max_n);
        if (!sc) {
#pragma omp atomic write
            oom = 1;
        }
#pragma omp for collapse(2) schedule(static)
        for (int i = 0; i < n_q; i++)
            for (int h = 0; h < n_heads; h++) {
                if (!sc) continue;
                const dms_kv_lane_view *ln = &lanes[h / group];
                const float *qi = q + ((size_t)i * n_heads + h) * head_dim;
                float *o = out + ((size_t)i * n_heads + h) * head_dim;
                float mx = -INFINITY;
                for (int s = 0; s < ln->n; s++) {
                    if (!visible(ln, s, q_pos[i], window)) {
                        sc[s] = -INFINITY;
                        continue;
                    }
                    const float *k = ln->k_blk[s / block_size] + (size_t)(s % block_size) * head_dim;
                    float d = 0.0f;
                    for (int c = 0; c < head_dim; c++) d += qi[c] * k[c];
                    sc[s] = d * scale;
                    mx = sc[s] > mx ? sc[s] : mx;
                }
                float sum = 0.0f;
                for (int s = 0; s < ln->n; s++) {
                    sc[s] = sc[s] == -INFINITY ? 0.0f : expf(sc[s] - mx);
                    sum += sc[s];
                }
                const float inv = sum > 0 ? 1.0f / sum : 0.0f;
                memset(o, 0, sizeof(float) * (size_t)head_dim);
                for (int s = 0; s < ln->n; s++) { /* sc becomes the probabilities */
                    const float p = sc[s] *= inv;
                    if (p == 0.0f) continue;
                    const float *v = ln->v_blk[s / block_size] + (size_t)(s % block_size) * head_dim;
                    for (int c = 0; c < head_dim; c++) o[c] += p * v[c];
                }
                if (probs) memcpy(probs + ((size_t)i * n_heads + h) * max_n, sc, sizeof(float) * (size_t)ln->n);
            }
        free(sc);
    }
    if (oom) {
        dms_cpu_fail(ctx, "attention_paged", "out of memory");
        dms_cpu_fill_nan(out, (size_t)n_q * n_heads * head_dim);
        free(probs);
        return;
    }
    for (int kh = 0; probs && kh < n_kv_heads; kh++) {
        const dms_kv_lane_view *ln = &lanes[kh];
        for (int i = 0; i < n_q; i++)
            for (int h = kh * group; h < (kh + 1) * group; h++) {
                const float *pr = probs + ((size_t)i * n_heads + h) * max_n;
                for (int s = 0; s < ln->n; s++) ln->score[s] += pr[s];
            }
    }
    free(probs);
}
