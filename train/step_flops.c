/* step_flops.c - model FLOPs of one training step (train/step_flops.h). */
#include "train/step_flops.h"

dms_step_flops dms_step_flops_of(const dms_config *c, const int32_t *seg, int T) {
    dms_step_flops f = {0};
    for (int i = 0; i < T;) {
        int j = i;
        while (j < T && seg[j] == seg[i]) j++;
        const double n = j - i;
        f.pairs += n * (n + 1) / 2;
        i = j;
    }
    const double d = c->hidden, q = (double)c->n_heads * c->head_dim, kv = (double)c->n_kv_heads * c->head_dim;
    const double layer_weights = d * q + 2 * d * kv + q * d + 3 * d * (double)c->intermediate;
    f.linear = 2.0 * T * c->n_layers * layer_weights;
    f.lm_head = 2.0 * T * (double)c->vocab * d;
    f.attention = 4.0 * f.pairs * q * c->n_layers;
    f.total = 3 * (f.linear + f.lm_head) + 4 * f.attention;
    return f;
}
