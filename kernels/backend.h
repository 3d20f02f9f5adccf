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
} dms_backend;

/* The reference backend; always available. */
extern const dms_backend dms_backend_cpu;

#endif
