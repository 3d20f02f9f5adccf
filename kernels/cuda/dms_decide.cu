/* dms_decide.cu - the DMS decision ops: eviction noise from the counter RNG
 * (kernels/dms_rng.h, shared with the CPU so both draw the same uniforms),
 * relaxed and hard decisions with the delayed-eviction log-keep bias,
 * their gradient, and the per-row compression loss on device scalars.
 * Twin of kernels/cpu/dms_decide.c; every kernel writes each output from
 * one thread (deterministic). */
#include "kernels/cuda/cuda_internal.cuh"
#include "kernels/dms_rng.h"

/* log(sigmoid(x)), stable for large |x| */
static __device__ __forceinline__ float log_sigmoid(float x) {
    return x >= 0 ? -log1pf(expf(-x)) : x - log1pf(expf(x));
}

static __device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void k_dms_noise(float *noise, int T, int KV, uint64_t seed, int64_t step, int layer, int64_t tok0) {
    CU_FOR(idx, (size_t)T * KV) {
        const int64_t t = (int64_t)(idx / KV);
        const int h = (int)(idx % KV);
        noise[idx] = dms_rng_logistic(
            dms_rng_key(seed, (uint64_t)step, (uint64_t)layer, (uint64_t)h, (uint64_t)(tok0 + t)));
    }
}

void cu_dms_noise(void *ctx, float *noise, int T, int KV, uint64_t seed, int64_t step, int layer, int64_t tok0) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (T <= 0 || KV <= 0) return;
    k_dms_noise<<<cu_blocks((size_t)T * KV), CU_THREADS, 0, c->stream>>>(noise, T, KV, seed, step, layer, tok0);
    cu_check(c, "dms_noise");
}

/* Whether token t decides about a sink key (its predecessor in the same
 * document sits at a position below `sinks`): that decision is void. */
static __device__ __forceinline__ int about_sink(const int32_t *seg, const int32_t *pos, int sinks, int t) {
    return sinks > 0 && t > 0 && seg[t - 1] == seg[t] && pos[t - 1] < sinks;
}

/* u and hard, one thread per (t, h) */
__global__ void k_dms_decide_u(float *u, float *hard, const float *z_raw, const float *noise, const int32_t *seg,
                               const int32_t *pos, int sinks, int T, int KV, float scale, float offset, float tau,
                               int per_layer) {
    CU_FOR(idx, (size_t)T * KV) {
        const size_t t = idx / KV;
        const int h = (int)(idx % KV);
        const size_t src = t * KV + (per_layer ? 0 : h);
        const float z = scale * z_raw[src] - offset;
        const float n = noise ? noise[src] : 0.0f;
        const float v = (z + n) / tau;
        u[idx] = v;
        if (hard) hard[idx] = v > 0.0f && !about_sink(seg, pos, sinks, (int)t) ? 1.0f : 0.0f;
    }
}

/* log_keep[j, h] = logsigmoid(-u[j+1, h]) inside a document, else 0 */
__global__ void k_dms_log_keep(float *log_keep, const float *u, const int32_t *seg, const int32_t *pos, int sinks,
                               int T, int KV) {
    CU_FOR(idx, (size_t)T * KV) {
        const int j = (int)(idx / KV);
        log_keep[idx] = (j + 1 < T && seg[j + 1] == seg[j] && !about_sink(seg, pos, sinks, j + 1))
                            ? log_sigmoid(-u[idx + KV])
                            : 0.0f;
    }
}

void cu_dms_decide(void *ctx, float *u, float *log_keep, float *hard, const float *z_raw, const float *noise,
                   const int32_t *seg, const int32_t *pos, int sinks, int T, int KV, float scale, float offset,
                   float tau, int per_layer) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (T <= 0 || KV <= 0) return;
    const unsigned nb = cu_blocks((size_t)T * KV);
    k_dms_decide_u<<<nb, CU_THREADS, 0, c->stream>>>(u, hard, z_raw, noise, seg, pos, sinks, T, KV, scale, offset, tau,
                                                     per_layer);
    cu_check(c, "dms_decide");
    if (log_keep) {
        k_dms_log_keep<<<nb, CU_THREADS, 0, c->stream>>>(log_keep, u, seg, pos, sinks, T, KV);
        cu_check(c, "dms_decide");
    }
}

/* One thread per token, over its KV heads in order: with per_layer every
 * head's gradient adds into column 0 in the CPU's order; the other columns
 * are zero. */
__global__ void k_dms_decide_bwd(float *dz_raw, const float *u, const float *dlog_keep, const float *dhard,
                                 const int32_t *seg, const int32_t *pos, int sinks, int T, int KV, float scale,
                                 float tau, int per_layer) {
    CU_FOR(ti, (size_t)T) {
        const int t = (int)ti;
        const int prev = t > 0 && seg[t - 1] == seg[t];
        const int void_decision = about_sink(seg, pos, sinks, t); /* constant: no gradient */
        float *dz = dz_raw + ti * KV;
        float acc = 0.0f; /* per_layer: column 0 */
        for (int h = 0; h < KV; h++) {
            const float a = sigmoid(u[ti * KV + h]);
            /* straight-through: gradient of alpha, a (1 - a) as sigmoid(u) sigmoid(-u) */
            float du = void_decision ? 0.0f : dhard[h] * a * sigmoid(-u[ti * KV + h]);
            /* u[t] sets log_keep[t-1] = logsigmoid(-u[t]); d/du = -sigmoid(u) */
            if (prev && dlog_keep && !void_decision) du -= a * dlog_keep[(ti - 1) * KV + h];
            if (per_layer) {
                acc += du * scale / tau;
                dz[h] = 0.0f;
            } else {
                dz[h] = 0.0f + du * scale / tau;
            }
        }
        if (per_layer) dz[0] = acc;
    }
}

void cu_dms_decide_bwd(void *ctx, float *dz_raw, const float *u, const float *dlog_keep, const float *dhard,
                       const int32_t *seg, const int32_t *pos, int sinks, int T, int KV, float scale, float tau,
                       int per_layer) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (T <= 0 || KV <= 0) return;
    k_dms_decide_bwd<<<cu_blocks((size_t)T), CU_THREADS, 0, c->stream>>>(dz_raw, u, dlog_keep, dhard, seg, pos, sinks,
                                                                        T, KV, scale, tau, per_layer);
    cu_check(c, "dms_decide_bwd");
}

__global__ void k_dms_comp_grad(float *dhard, int n_dhard, double *comp_acc, double *count, double denom,
                                float target, float weight, float coef) {
    const double frac = *count / denom;
    const double comp = frac < target ? target - frac : 0.0;
    *comp_acc += weight * comp;
    for (int i = 0; i < n_dhard; i++) dhard[i] = comp > 0 ? coef : 0.0f;
    *count = 0.0;
}

void cu_dms_comp_grad(void *ctx, float *dhard, int n_dhard, double *comp_acc, double *count, double denom,
                      float target, float weight, float coef) {
    cu_ctx *c = (cu_ctx *)ctx;
    k_dms_comp_grad<<<1, 1, 0, c->stream>>>(dhard, n_dhard, comp_acc, count, denom, target, weight, coef);
    cu_check(c, "dms_comp_grad");
}

/* The guidance loss: one block; thread t0 walks tokens t0, t0 + blockDim,
 * ... (heads in order, so per_layer's column 0 adds up as on the CPU: one
 * thread owns a token), then a fixed-tree block sum of the loss. */
__global__ void k_dms_guide_grad(float *dz_raw, double *loss_acc, const float *z_raw, const float *target,
                                 const float *mask, int T, int KV, float scale, float offset, float coef,
                                 int per_layer) {
    double loss = 0.0;
    for (int t = threadIdx.x; t < T; t += blockDim.x)
        for (int h = 0; h < KV; h++) {
            const size_t i = (size_t)t * KV + h, src = (size_t)t * KV + (per_layer ? 0 : h);
            if (mask[i] == 0.0f) continue;
            const float x = scale * z_raw[src] - offset, y = target[i];
            dz_raw[src] += coef * (sigmoid(x) - y) * scale;
            const double xd = (double)x;
            const double sp = xd > 0 ? xd + log1p(exp(-xd)) : log1p(exp(xd));
            loss += (double)coef * (sp - (double)y * x);
        }
    loss = cu_block_sum_d(loss);
    if (threadIdx.x == 0) *loss_acc += loss;
}

void cu_dms_guide_grad(void *ctx, float *dz_raw, double *loss_acc, const float *z_raw, const float *target,
                       const float *mask, int T, int KV, float scale, float offset, float coef, int per_layer) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (T <= 0 || KV <= 0) return;
    k_dms_guide_grad<<<1, CU_THREADS, 0, c->stream>>>(dz_raw, loss_acc, z_raw, target, mask, T, KV, scale, offset,
                                                      coef, per_layer);
    cu_check(c, "dms_guide_grad");
}
