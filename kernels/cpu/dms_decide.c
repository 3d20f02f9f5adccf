/* dms_decide.c - the DMS decision ops: eviction noise, relaxed and hard
 * decisions with the delayed-eviction log-keep bias (shift by one, per
 * document), their gradient, and the per-row compression loss. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/dms_rng.h"

/* log(sigmoid(x)), stable for large |x| */
static float log_sigmoid(float x) { return x >= 0 ? -log1pf(expf(-x)) : x - log1pf(expf(x)); }

static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Whether token t decides about a sink key (its predecessor in the same
 * document sits at a position below `sinks`): that decision is void. */
static int about_sink(const int32_t *seg, const int32_t *pos, int sinks, int t) {
    return sinks > 0 && t > 0 && seg[t - 1] == seg[t] && pos[t - 1] < sinks;
}

void dms_cpu_dms_noise(void *ctx, float *noise, int T, int KV, uint64_t seed, int64_t step, int layer,
                       int64_t tok0) {
    (void)ctx;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < KV; h++)
            noise[(size_t)t * KV + h] = dms_rng_logistic(
                dms_rng_key(seed, (uint64_t)step, (uint64_t)layer, (uint64_t)h, (uint64_t)(tok0 + t)));
}

void dms_cpu_dms_decide(void *ctx, float *u, float *log_keep, float *hard, const float *z_raw,
                        const float *noise, const int32_t *seg, const int32_t *pos, int sinks, int T, int KV,
                        float scale, float offset, float tau, int per_layer) {
    (void)ctx;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < KV; h++) {
            const int src = per_layer ? 0 : h;
            float z = scale * z_raw[(size_t)t * KV + src] - offset;
            float n = noise ? noise[(size_t)t * KV + src] : 0.0f;
            float v = (z + n) / tau;
            u[(size_t)t * KV + h] = v;
            if (hard) hard[(size_t)t * KV + h] = v > 0.0f && !about_sink(seg, pos, sinks, t) ? 1.0f : 0.0f;
        }
    for (int j = 0; j < T; j++)
        for (int h = 0; h < KV; h++)
            log_keep[(size_t)j * KV + h] = (j + 1 < T && seg[j + 1] == seg[j] && !about_sink(seg, pos, sinks, j + 1))
                                               ? log_sigmoid(-u[(size_t)(j + 1) * KV + h])
                                               : 0.0f;
}

void dms_cpu_dms_decide_bwd(void *ctx, float *dz_raw, const float *u, const float *dlog_keep, const float *dhard,
                            const int32_t *seg, const int32_t *pos, int sinks, int T, int KV, float scale, float tau,
                            int per_layer) {
    (void)ctx;
    memset(dz_raw, 0, sizeof(float) * (size_t)T * KV);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < KV; h++) {
            if (about_sink(seg, pos, sinks, t)) continue; /* a void decision: constant */
            const float a = sigmoid(u[(size_t)t * KV + h]);
            /* straight-through: gradient of alpha; a (1 - a) as sigmoid(u) sigmoid(-u),
             * which keeps its digits when a is close to 1 */
            float du = dhard[h] * a * sigmoid(-u[(size_t)t * KV + h]);
            /* u[t] sets log_keep[t-1] = logsigmoid(-u[t]); d/du = -sigmoid(u) */
            if (t > 0 && seg[t - 1] == seg[t]) du -= a * dlog_keep[(size_t)(t - 1) * KV + h];
            dz_raw[(size_t)t * KV + (per_layer ? 0 : h)] += du * scale / tau;
        }
}

void dms_cpu_dms_comp_grad(void *ctx, float *dhard, int n_dhard, double *comp_acc, double *count, double denom,
                           float target, float weight, float coef) {
    (void)ctx;
    const double frac = *count / denom;
    const double comp = frac < target ? target - frac : 0.0;
    *comp_acc += weight * comp;
    for (int i = 0; i < n_dhard; i++) dhard[i] = comp > 0 ? coef : 0.0f;
    *count = 0.0;
}

/* softplus(x) = log(1 + e^x), stable */
static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

void dms_cpu_dms_guide_grad(void *ctx, float *dz_raw, double *loss_acc, const float *z_raw, const float *target,
                            const float *mask, int T, int KV, float scale, float offset, float coef, int per_layer) {
    (void)ctx;
    double loss = 0.0;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < KV; h++) {
            const size_t i = (size_t)t * KV + h, src = (size_t)t * KV + (per_layer ? 0 : h);
            if (mask[i] == 0.0f) continue;
            const float x = scale * z_raw[src] - offset, y = target[i];
            dz_raw[src] += coef * (sigmoid(x) - y) * scale;
            loss += (double)coef * (softplus((double)x) - (double)y * x);
        }
    *loss_acc += loss;
}
