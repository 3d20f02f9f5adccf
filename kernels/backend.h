/* backend.h - the op table. Model code calls every numeric op through a
 * dms_backend, never a kernel directly, so that the CPU reference
 * (kernels/cpu, fp32 + OpenBLAS + OpenMP) and the CUDA backend
 * (kernels/cuda) are interchangeable and the CPU can serve as the oracle the
 * CUDA ops are tested against. All activations are fp32 row-major buffers
 * allocated through the table's own alloc; weights are dms_mat descriptors
 * so that a backend can keep them in its preferred dtype. Every op takes the
 * backend's ctx first; call them as be->op(be->ctx, ...). */
#ifndef DMS_BACKEND_H
#define DMS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef enum { DMS_F32 = 0, DMS_BF16 = 1 } dms_dtype;

/* A weight matrix [rows, cols] (PyTorch Linear layout: rows = out features). */
typedef struct dms_mat {
    void *data; /* backend memory */
    dms_dtype dtype;
    int rows, cols;
} dms_mat;

typedef struct dms_backend {
    const char *name;
    void *ctx; /* backend state (CUDA: handles, stream); passed to every op */

    /* ---- memory (device memory for accelerators) ---- */
    void *(*alloc)(void *ctx, size_t bytes);            /* zero-filled; NULL on failure */
    void (*free)(void *ctx, void *p);
    void (*upload)(void *ctx, void *dst, const void *src, size_t bytes);   /* host -> backend */
    void (*download)(void *ctx, void *dst, const void *src, size_t bytes); /* backend -> host */
    void (*copy)(void *ctx, void *dst, const void *src, size_t bytes);     /* backend -> backend */
    void (*sync)(void *ctx);

    /* ---- forward ops ---- */
    /* out[n, w.rows] = x[n, w.cols] @ w^T (+ bias[w.rows] if bias) */
    void (*matmul)(void *ctx, float *out, const float *x, const dms_mat *w, const float *bias, int n);
    /* Row-wise RMSNorm: out[r] = x[r] / rms(x[r]) * w, rows of length dim.
     * Also used per head (Qwen3 q/k norm) with rows = tokens*heads. */
    void (*rmsnorm)(void *ctx, float *out, const float *x, const float *w, int rows, int dim, float eps);
    /* Rotary embedding in place, rotate-half (NeoX / Hugging Face) pairing:
     * x[n, n_heads*head_dim], token i at position pos[i], inv_freq[head_dim/2]. */
    void (*rope)(void *ctx, float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads,
                 int head_dim);
    /* Causal grouped-query attention of n_q queries against n_kv cached keys.
     * q[n_q, n_heads*hd]; k, v[n_kv, n_kv_heads*hd]; query i sits at absolute
     * position q_pos[i] and sees keys 0..q_pos[i]; out[n_q, n_heads*hd]. */
    void (*attention)(void *ctx, float *out, const float *q, const float *k, const float *v,
                      const int32_t *q_pos, int n_q, int n_kv, int n_heads, int n_kv_heads,
                      int head_dim, float scale);
    /* out = silu(gate) * up, elementwise over n */
    void (*swiglu)(void *ctx, float *out, const float *gate, const float *up, size_t n);
    /* y += x */
    void (*add)(void *ctx, float *y, const float *x, size_t n);
    /* out[i] = table row ids[i]; table is a [vocab, dim] matrix */
    void (*embedding)(void *ctx, float *out, const dms_mat *table, const int32_t *ids, int n);

    /* ---- training: DMS attention and backward ops ----
     * A packed training sequence has T tokens; seg[t] is the document each
     * token belongs to (attention never crosses documents). */

    /* DMS attention forward over a whole packed sequence. Query i attends
     * key j iff j <= i and seg[j] == seg[i]; the score gets the additive bias
     *   0                    if i - j <= window
     *   log_keep[j, kv(h)]   otherwise (log of the probability that key j is
     *                        still kept; log_keep may be NULL = all zeros)
     * after scaling. q[T, H*hd], k/v[T, KV*hd], log_keep[T, KV];
     * out[T, H*hd]; lse[T, H] receives each row's log-sum-exp for backward. */
    void (*attention_dms_fwd)(void *ctx, float *out, float *lse, const float *q, const float *k,
                              const float *v, const float *log_keep, const int32_t *seg, int T,
                              int n_heads, int n_kv_heads, int head_dim, int window, float scale);
    /* Its gradient: dq, dk, dv are overwritten; dlog_keep[T, KV] (if not
     * NULL) is overwritten with dLoss/dlog_keep. out and lse are the forward's. */
    void (*attention_dms_bwd)(void *ctx, float *dq, float *dk, float *dv, float *dlog_keep,
                              const float *dout, const float *out, const float *lse, const float *q,
                              const float *k, const float *v, const float *log_keep,
                              const int32_t *seg, int T, int n_heads, int n_kv_heads, int head_dim,
                              int window, float scale);
    /* dx[n, w.cols] = dy[n, w.rows] @ w (accumulate: dx += instead of =) */
    void (*matmul_bwd_x)(void *ctx, float *dx, const float *dy, const dms_mat *w, int n, int accumulate);
    /* dw[rows, cols] += dy[n, rows]^T @ x[n, cols]; db[rows] += sum_n dy (db may be NULL).
     * For trainable weights only: fp32 gradients. */
    void (*matmul_bwd_w)(void *ctx, float *dw, float *db, const float *dy, const float *x, int n,
                         int rows, int cols);
    /* dx = d rmsnorm(x; w)/dx applied to dy (overwrites dx; dx may alias dy);
     * dw[dim] += gradient of w if dw is not NULL. */
    void (*rmsnorm_bwd)(void *ctx, float *dx, float *dw, const float *dy, const float *x,
                        const float *w, int rows, int dim, float eps);
    /* Inverse rotation in place: turns d(rope(x)) into dx. */
    void (*rope_bwd)(void *ctx, float *dx, const int32_t *pos, const float *inv_freq, int n,
                     int n_heads, int head_dim);
    /* out = silu(gate)*up backward: dgate, dup overwritten (may alias gate/up). */
    void (*swiglu_bwd)(void *ctx, float *dgate, float *dup, const float *dout, const float *gate,
                       const float *up, size_t n);
    /* Distillation on a chunk of rows: zs, zt[rows, V] are student and
     * teacher logits. loss[r] = sum_v p_s (log p_s - log p_t) (KL(s||t)),
     * and dzs[r] = weight[r] * dloss[r]/dzs[r] (dzs may alias zs). */
    void (*kd_chunk)(void *ctx, float *loss, float *dzs, const float *zs, const float *zt,
                     const float *weight, int rows, int V);
    /* AdamW step on one fp32 tensor: g is scaled by grad_scale first (for
     * clipping); bias-corrected with step t (1-based). */
    void (*adamw)(void *ctx, float *p, const float *g, float *m, float *v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int t, float grad_scale);
    /* y += a * x (LoRA branches) */
    void (*axpy)(void *ctx, float *y, float a, const float *x, size_t n);
    /* sum of squares of x (for the global grad norm), returned to the host */
    double (*sumsq)(void *ctx, const float *x, size_t n);

    /* ---- DMS decisions (DESIGN.md section 1, docs/dms_reference_notes.md) ----
     * A layer has T x KV decision logits z = scale * z_raw - offset. */

    /* Logistic(0,1) noise[T, KV] from the counter RNG (kernels/dms_rng.h),
     * keyed by (seed, step, layer, kv head, tok0 + t): rank-count independent. */
    void (*dms_noise)(void *ctx, float *noise, int T, int KV, uint64_t seed, int64_t step, int layer,
                      int64_t tok0);
    /* u = (scale*z_raw - offset + noise) / tau (noise may be NULL: eval);
     * hard = [u > 0]; log_keep[j] = logsigmoid(-u[j+1]) when token j+1 is in
     * j's document, else 0 (the decision about key j is emitted by j+1).
     * per_layer: KV head 0's logit and noise stand for every head. */
    void (*dms_decide)(void *ctx, float *u, float *log_keep, float *hard, const float *z_raw,
                       const float *noise, const int32_t *seg, int T, int KV, float scale,
                       float offset, float tau, int per_layer);
    /* Gradient w.r.t. z_raw (overwritten) from dlog_keep[T, KV] (attention)
     * and dhard, the gradient reaching every straight-through decision
     * (compression loss; d_st = hard + alpha - stopgrad(alpha)). */
    void (*dms_decide_bwd)(void *ctx, float *dz_raw, const float *u, const float *dlog_keep,
                           float dhard, const int32_t *seg, int T, int KV, float scale, float tau,
                           int per_layer);
    /* Neuron variant: out[t, h] = q[t, (h*H/KV)*hd + hd-1], the last channel
     * of the first query head of each KV group; if zero, that channel of q
     * is then set to 0. q[T, H*hd]. out may be NULL (zero only). */
    void (*dms_neuron_take)(void *ctx, float *out, float *q, int T, int n_heads, int n_kv_heads,
                            int head_dim, int zero);
    /* Inverse of take: q[t, that channel] = in[t, h]. */
    void (*dms_neuron_put)(void *ctx, float *q, const float *in, int T, int n_heads, int n_kv_heads,
                           int head_dim);
} dms_backend;

/* The reference backend; always available. */
extern const dms_backend dms_backend_cpu;

#endif
