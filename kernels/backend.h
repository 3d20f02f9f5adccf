/* backend.h - the op table. Model code calls every numeric op through a
 * dms_backend, never a kernel directly, so that the CPU reference
 * (kernels/cpu, fp32 + OpenBLAS + OpenMP) and the CUDA backend
 * (kernels/cuda, bf16 weights + cuBLAS) are interchangeable and the CPU can
 * serve as the oracle the CUDA ops are tested against.
 *
 * Conventions:
 * - Activations are fp32 row-major buffers in backend memory, allocated
 *   through a dms_arena (kernels/arena.h); weights are dms_mat descriptors
 *   in the backend's weight dtype (be->weight_dtype: fp32 on the CPU, bf16
 *   on CUDA) or, for inference, in a dtype the backend reads directly
 *   (be->supports_dtype: the CPU keeps GGUF blocks and 16-bit weights as
 *   they are); trainable tensors are always fp32.
 * - Every op takes the backend's ctx first: be->op(be->ctx, ...).
 * - Ops do not return errors. A failure inside an op (out of memory, a
 *   launch error) is recorded in the backend's sticky status, which the
 *   caller checks once per step with be->status; the op's outputs are then
 *   NaN-filled or undefined.
 * - A backend declares the ops it implements by leaving the others NULL;
 *   dms_backend_require (kernels/registry.h) turns a missing op into an
 *   error at start, never a NULL call.
 * - Sizes passed to memory ops are in bytes; use the typed helpers at the
 *   end of this file, so that element sizes appear only in kernels/. */
#ifndef DMS_BACKEND_H
#define DMS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

/* Weight dtypes. F32, BF16, F16: one element each. The others are ggml's
 * block formats, byte for byte as a GGUF file stores them (layouts in
 * kernels/dtype.c): a row of a matrix is cols / dms_dtype_block(t) whole
 * blocks of dms_dtype_block_bytes(t) bytes. */
typedef enum {
    DMS_F32 = 0,
    DMS_BF16 = 1,
    DMS_F16 = 2,
    DMS_Q4_0 = 3, /* 32 elements: f16 scale, 16 bytes of nibbles */
    DMS_Q4_1 = 4, /* 32 elements: f16 scale, f16 min, 16 bytes of nibbles */
    DMS_Q8_0 = 5, /* 32 elements: f16 scale, 32 int8 */
    DMS_Q4_K = 6, /* 256 elements: 8 sub-blocks with 6-bit scales and mins */
    DMS_Q6_K = 7, /* 256 elements: 16 sub-blocks with int8 scales */
    DMS_DTYPE_COUNT
} dms_dtype;

/* A weight matrix [rows, cols] (PyTorch Linear layout: rows = out features). */
typedef struct dms_mat {
    void *data; /* backend memory */
    dms_dtype dtype;
    int rows, cols;
} dms_mat;

/* The ops every model run needs (inference). */
#define DMS_OPS_INFER(X)                                                                           \
    X(alloc) X(free) X(upload) X(download) X(copy) X(sync) X(status) X(zero) X(zero_f64) X(scale) \
    X(add) X(axpy) X(matmul) X(matmul_multi) X(rmsnorm) X(rope) X(attention) X(swiglu) X(embedding) \
    X(dms_neuron_take) X(dms_neuron_put)
/* The ops a training step needs on top of those. */
#define DMS_OPS_TRAIN(X)                                                                          \
    X(attention_dms_fwd) X(attention_dms_bwd) X(matmul_bwd_x) X(matmul_bwd_w) X(rmsnorm_bwd)      \
    X(rope_bwd) X(swiglu_bwd) X(kd_chunk) X(adamw) X(sumsq) X(sum_acc) X(dms_noise) X(dms_decide) \
    X(dms_decide_bwd) X(dms_comp_grad) X(attention_future_max) X(dms_guide_grad)

/* The ops the runtime's paged KV cache needs (runtime/kv_paged.c). */
#define DMS_OPS_RUNTIME(X) X(attention_paged)

/* One KV head's ragged cache as attention_paged reads it: n keys; key s
 * lives at row s % block_size of blocks k_blk[s / block_size] and
 * v_blk[...] (each [block_size, head_dim] elements of `dtype` in backend
 * memory), sits at position pos[s] and carries the eviction flag flag[s]
 * (NULL: none flagged). score (may be NULL) receives, per key, the
 * attention probability summed over the queries and the query heads of the
 * group (TOVA, H2O). The arrays k_blk, v_blk, pos, flag and score are host
 * memory: the runtime keeps its bookkeeping on the host. dtype: DMS_F32
 * (0, what every backend reads), or DMS_F16 / DMS_BF16 where the backend
 * has the narrow op (a 16-bit cache; attention accumulates in fp32). */
typedef struct dms_kv_lane_view {
    const void *const *k_blk;
    const void *const *v_blk;
    const int32_t *pos;
    const uint8_t *flag;
    float *score;
    int n;
    dms_dtype dtype;
} dms_kv_lane_view;

typedef struct dms_backend {
    const char *name;
    void *ctx;               /* backend state (CPU: sticky status; CUDA: handles, stream) */
    dms_dtype weight_dtype;  /* the dtype the loader converts frozen weights to */
    /* Whether matmul and embedding read weights of dtype t as they are (the
     * loader keeps such weights unconverted when asked to,
     * DMS_LOAD_KEEP_DTYPE). NULL: weight_dtype and fp32 only. Optional: not
     * in the op lists below. */
    int (*supports_dtype)(void *ctx, dms_dtype t);

    /* Optional (not in the op lists; NULL: the backend's KV cache is fp32
     * only): dst[n] = src[n] in dtype t (DMS_F32, DMS_F16 or DMS_BF16),
     * rounded to nearest even - the rows of a 16-bit KV cache, which
     * attention_paged then reads (dms_kv_lane_view.dtype). Backend memory. */
    void (*narrow)(void *ctx, void *dst, dms_dtype t, const float *src, size_t n);
    /* Optional (not in the op lists; NULL on the CPU): the device's name
     * and its memory in use and in total, in bytes (every allocation on the
     * device, its context included), for benchmarks. 0, or -1 if the
     * device cannot say. */
    int (*device_info)(void *ctx, char *name, size_t cap, size_t *used, size_t *total);
    /* Optional (not in the op lists; NULL: every op has finished when it
     * returns, as on the CPU): the queue the backend's ops run on (CUDA:
     * its cudaStream_t), so that a communicator can order a collective on a
     * buffer after the ops queued to write it (train/comm.h,
     * iallreduce_f32) without waiting for them on the host. */
    void *(*queue)(void *ctx);

    /* ---- memory (device memory for accelerators); sizes in bytes ---- */
    void *(*alloc)(void *ctx, size_t bytes);            /* zero-filled; NULL on failure */
    void (*free)(void *ctx, void *p);
    void (*upload)(void *ctx, void *dst, const void *src, size_t bytes);   /* host -> backend */
    void (*download)(void *ctx, void *dst, const void *src, size_t bytes); /* backend -> host (synchronous) */
    void (*copy)(void *ctx, void *dst, const void *src, size_t bytes);     /* backend -> backend */
    void (*sync)(void *ctx);
    /* The sticky status: 0 if every op since the last call succeeded; else
     * -1 with the first failure's message in msg[cap]. Clears it. */
    int (*status)(void *ctx, char *msg, size_t cap);

    /* ---- elementwise ---- */
    void (*zero)(void *ctx, float *x, size_t n);
    void (*zero_f64)(void *ctx, double *x, size_t n);
    void (*scale)(void *ctx, float *x, float a, size_t n);                   /* x *= a */
    void (*add)(void *ctx, float *y, const float *x, size_t n);              /* y += x */
    void (*axpy)(void *ctx, float *y, float a, const float *x, size_t n);    /* y += a x */

    /* ---- forward ops ---- */
    /* out[n, w.rows] = x[n, w.cols] @ w^T (+ bias[w.rows] if bias) */
    void (*matmul)(void *ctx, float *out, const float *x, const dms_mat *w, const float *bias, int n);
    /* count products of one input (q/k/v of one norm, gate/up): outs[i] =
     * x @ ws[i]^T (+ biases[i] where biases and biases[i] are not NULL),
     * the same values as count matmul calls; a backend may prepare x once
     * for all of them (CUDA: one bf16 copy of x where the weights are bf16) */
    void (*matmul_multi)(void *ctx, int count, float *const *outs, const float *x, const dms_mat *const *ws,
                         const float *const *biases, int n);
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
    /* Attention of n_q queries of one sequence (positions q_pos) against its
     * per-KV-head ragged caches lanes[n_kv_heads]. Key s of lane h is visible
     * to query i iff pos[s] <= q_pos[i] and (q_pos[i] - pos[s] <= window or
     * flag[s] == 0): the DMS rule, so that queries of a prefill chunk see
     * exactly what token-by-token decoding would show them.
     * q[n_q, H*hd], out[n_q, H*hd]; lanes[h].score += probabilities if set. */
    void (*attention_paged)(void *ctx, float *out, const float *q, const int32_t *q_pos, int n_q,
                            const dms_kv_lane_view *lanes, int n_heads, int n_kv_heads, int head_dim,
                            int block_size, int window, float scale);
    /* out = silu(gate) * up, elementwise over n */
    void (*swiglu)(void *ctx, float *out, const float *gate, const float *up, size_t n);
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
     * teacher logits. forward 0: loss[r] = sum_v p_s (log p_s - log p_t)
     * (KL(s||t), NVIDIA's); forward 1: sum_v p_t (log p_t - log p_s)
     * (KL(t||s)). dzs[r] = weight[r] * dloss[r]/dzs[r] (dzs may alias zs).
     * loss and dzs may be NULL (skipped); weight NULL means 1. */
    void (*kd_chunk)(void *ctx, float *loss, float *dzs, const float *zs, const float *zt,
                     const float *weight, int rows, int V, int forward);
    /* AdamW step on one fp32 tensor: g is scaled by grad_scale first (for
     * clipping); bias-corrected with step t (1-based). */
    void (*adamw)(void *ctx, float *p, const float *g, float *m, float *v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int t, float grad_scale);
    /* sum of squares of x (for the global grad norm), returned to the host:
     * a synchronising read, once per step. Fixed summation order. */
    double (*sumsq)(void *ctx, const float *x, size_t n);
    /* Device-side statistics: *acc += sum_i x[i] * w[i] (w NULL: 1), in
     * double, without a host read (KD sums, decision counts). */
    void (*sum_acc)(void *ctx, double *acc, const float *x, const float *w, size_t n);

    /* ---- DMS decisions (DESIGN.md section 1, docs/dms_reference_notes.md) ----
     * A layer has T x KV decision logits z = scale * z_raw - offset. */

    /* Logistic(0,1) noise[T, KV] from the counter RNG (kernels/dms_rng.h),
     * keyed by (seed, step, layer, kv head, tok0 + t): rank-count independent. */
    void (*dms_noise)(void *ctx, float *noise, int T, int KV, uint64_t seed, int64_t step, int layer,
                      int64_t tok0);
    /* u = (scale*z_raw - offset + noise) / tau (noise may be NULL: eval);
     * hard = [u > 0]; log_keep[j] = logsigmoid(-u[j+1]) when token j+1 is in
     * j's document, else 0 (the decision about key j is emitted by j+1).
     * per_layer: KV head 0's logit and noise stand for every head.
     * Sinks (an optional extension, sinks = 0: off): a key j at position
     * pos[j] < sinks of its document is never evicted: log_keep[j] = 0 and
     * the decision about it, hard[j+1], is 0 (pos may be NULL when off). */
    void (*dms_decide)(void *ctx, float *u, float *log_keep, float *hard, const float *z_raw,
                       const float *noise, const int32_t *seg, const int32_t *pos, int sinks, int T, int KV,
                       float scale, float offset, float tau, int per_layer);
    /* Gradient w.r.t. z_raw (overwritten) from dlog_keep[T, KV] (attention)
     * and dhard[KV] (backend memory), the gradient reaching every
     * straight-through decision of KV head h (compression loss; d_st = hard +
     * alpha - stopgrad(alpha)). Decisions about sink keys get no gradient. */
    void (*dms_decide_bwd)(void *ctx, float *dz_raw, const float *u, const float *dlog_keep,
                           const float *dhard, const int32_t *seg, const int32_t *pos, int sinks, int T, int KV,
                           float scale, float tau, int per_layer);
    /* The compression loss of one row (or one head of a row), on the
     * device: frac = *count / denom (the mean hard decision), comp =
     * max(0, target - frac); *comp_acc += weight * comp; dhard[0..n_dhard) =
     * comp > 0 ? coef : 0; then *count = 0 for the next row. */
    void (*dms_comp_grad)(void *ctx, float *dhard, int n_dhard, double *comp_acc, double *count, double denom,
                          float target, float weight, float coef);

    /* ---- attention guidance (an optional extension, docs/training.md) ----
     * imp[T, KV]: for key j and KV head kh, the largest attention
     * probability exp(scale q_i.k_j - lse[i, h]) over the heads h of kh's
     * group and the queries i of j's document with i - j > window (the
     * queries that an eviction of j would hide it from); 0 where there is
     * none. With mean != 0 the mean of those probabilities over the (i, h)
     * pairs instead of their largest (guide_reduce "mean"). lse[T, H] is
     * attention_dms_fwd's (no bias: the teacher's). v[T, KV, head_dim],
     * when not NULL: imp[j, kh] is then multiplied by the l1 norm of v_j
     * (guide_score "attention_value"). */
    void (*attention_future_max)(void *ctx, float *imp, const float *q, const float *k, const float *v,
                                 const float *lse, const int32_t *seg, int T, int n_heads, int n_kv_heads,
                                 int head_dim, int window, float scale, int mean);
    /* The guidance loss of one layer's decisions: where mask[t, h] != 0,
     * binary cross-entropy of the decision logit x = scale * z_raw - offset
     * against target[t, h] (1 = evict), times coef: *loss_acc += coef *
     * (softplus(x) - y x) and dz_raw += coef (sigmoid(x) - y) scale
     * (accumulated; per_layer: into column 0, in head order). */
    void (*dms_guide_grad)(void *ctx, float *dz_raw, double *loss_acc, const float *z_raw, const float *target,
                           const float *mask, int T, int KV, float scale, float offset, float coef, int per_layer);
    /* Neuron variant: out[t, h] = q[t, (h*H/KV)*hd + hd-1], the last channel
     * of the first query head of each KV group; that channel of q is then
     * multiplied by keep (0: zeroed, DMS; 1: left; in between: the neuron
     * warm-up's fade). q[T, H*hd]. out may be NULL (scaling only). */
    void (*dms_neuron_take)(void *ctx, float *out, float *q, int T, int n_heads, int n_kv_heads,
                            int head_dim, float keep);
    /* Inverse of take: q[t, that channel] = keep * q[t, that channel] +
     * in[t, h] (keep 0: replaced). */
    void (*dms_neuron_put)(void *ctx, float *q, const float *in, int T, int n_heads, int n_kv_heads,
                           int head_dim, float keep);
} dms_backend;

/* ---- typed memory helpers: the only place element sizes meet byte sizes ---- */
static inline void dms_upload_f32(const dms_backend *be, float *dst, const float *src, size_t n) {
    be->upload(be->ctx, dst, src, n * sizeof(float));
}
static inline void dms_upload_i32(const dms_backend *be, int32_t *dst, const int32_t *src, size_t n) {
    be->upload(be->ctx, dst, src, n * sizeof(int32_t));
}
static inline void dms_download_f32(const dms_backend *be, float *dst, const float *src, size_t n) {
    be->download(be->ctx, dst, src, n * sizeof(float));
}
static inline void dms_download_f64(const dms_backend *be, double *dst, const double *src, size_t n) {
    be->download(be->ctx, dst, src, n * sizeof(double));
}
static inline void dms_copy_f32(const dms_backend *be, float *dst, const float *src, size_t n) {
    be->copy(be->ctx, dst, src, n * sizeof(float));
}
/* Elements per block of a weight dtype (1 for F32, BF16, F16) and the bytes
 * of one block. */
static inline int dms_dtype_block(dms_dtype t) {
    return t == DMS_Q4_K || t == DMS_Q6_K ? 256 : t == DMS_Q4_0 || t == DMS_Q4_1 || t == DMS_Q8_0 ? 32 : 1;
}
static inline size_t dms_dtype_block_bytes(dms_dtype t) {
    switch (t) {
    case DMS_BF16: case DMS_F16: return 2;
    case DMS_Q4_0: return 18;
    case DMS_Q4_1: return 20;
    case DMS_Q8_0: return 34;
    case DMS_Q4_K: return 144;
    case DMS_Q6_K: return 210;
    default: return 4;
    }
}
/* Bytes of n elements of a weight dtype (n a multiple of its block). */
static inline size_t dms_dtype_bytes(dms_dtype t, size_t n) {
    return n / (size_t)dms_dtype_block(t) * dms_dtype_block_bytes(t);
}

/* The CPU reference op table (kernels/cpu/backend_cpu.c); open a backend
 * with dms_backend_open (kernels/registry.h) to get one with its context. */
extern const dms_backend dms_cpu_ops;

#endif
