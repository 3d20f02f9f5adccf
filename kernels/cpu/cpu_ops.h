/* cpu_ops.h - the CPU reference kernels behind dms_backend_cpu. Declared
 * here so that tests (and the CUDA backend's tests) can call one kernel
 * directly as an oracle. */
#ifndef DMS_CPU_OPS_H
#define DMS_CPU_OPS_H

#include "kernels/backend.h"

void *dms_cpu_alloc(void *ctx, size_t bytes);
void dms_cpu_free(void *ctx, void *p);
void dms_cpu_memcpy(void *ctx, void *dst, const void *src, size_t bytes);
void dms_cpu_sync(void *ctx);

void dms_cpu_matmul(void *ctx, float *out, const float *x, const dms_mat *w, const float *bias, int n);
void dms_cpu_rmsnorm(void *ctx, float *out, const float *x, const float *w, int rows, int dim, float eps);
/* Rotate-half RoPE by dir * angle (dir = -1 undoes it: the backward). */
void dms_cpu_rotate_half(float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads, int head_dim,
                         float dir);
void dms_cpu_rope(void *ctx, float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads,
                  int head_dim);
void dms_cpu_attention(void *ctx, float *out, const float *q, const float *k, const float *v,
                       const int32_t *q_pos, int n_q, int n_kv, int n_heads, int n_kv_heads,
                       int head_dim, float scale);
void dms_cpu_swiglu(void *ctx, float *out, const float *gate, const float *up, size_t n);
void dms_cpu_add(void *ctx, float *y, const float *x, size_t n);
void dms_cpu_axpy(void *ctx, float *y, float a, const float *x, size_t n);
void dms_cpu_embedding(void *ctx, float *out, const dms_mat *table, const int32_t *ids, int n);

/* training ops (cpu_train_ops.c); semantics in kernels/backend.h */
void dms_cpu_attention_dms_fwd(void *ctx, float *out, float *lse, const float *q, const float *k,
                               const float *v, const float *log_keep, const int32_t *seg, int T,
                               int n_heads, int n_kv_heads, int head_dim, int window, float scale);
void dms_cpu_attention_dms_bwd(void *ctx, float *dq, float *dk, float *dv, float *dlog_keep,
                               const float *dout, const float *out, const float *lse, const float *q,
                               const float *k, const float *v, const float *log_keep,
                               const int32_t *seg, int T, int n_heads, int n_kv_heads, int head_dim,
                               int window, float scale);
void dms_cpu_matmul_bwd_x(void *ctx, float *dx, const float *dy, const dms_mat *w, int n, int accumulate);
void dms_cpu_matmul_bwd_w(void *ctx, float *dw, float *db, const float *dy, const float *x, int n,
                          int rows, int cols);
void dms_cpu_rmsnorm_bwd(void *ctx, float *dx, float *dw, const float *dy, const float *x,
                         const float *w, int rows, int dim, float eps);
void dms_cpu_rope_bwd(void *ctx, float *dx, const int32_t *pos, const float *inv_freq, int n,
                      int n_heads, int head_dim);
void dms_cpu_swiglu_bwd(void *ctx, float *dgate, float *dup, const float *dout, const float *gate,
                        const float *up, size_t n);
/* loss and dzs may be NULL (that output is skipped); weight NULL means all 1 */
void dms_cpu_kd_chunk(void *ctx, float *loss, float *dzs, const float *zs, const float *zt,
                      const float *weight, int rows, int V);
void dms_cpu_adamw(void *ctx, float *p, const float *g, float *m, float *v, size_t n, float lr,
                   float beta1, float beta2, float eps, float weight_decay, int t, float grad_scale);
double dms_cpu_sumsq(void *ctx, const float *x, size_t n);

/* DMS decisions (cpu_dms_ops.c) */
void dms_cpu_dms_noise(void *ctx, float *noise, int T, int KV, uint64_t seed, int64_t step, int layer,
                       int64_t tok0);
void dms_cpu_dms_decide(void *ctx, float *u, float *log_keep, float *hard, const float *z_raw,
                        const float *noise, const int32_t *seg, int T, int KV, float scale, float offset,
                        float tau, int per_layer);
void dms_cpu_dms_decide_bwd(void *ctx, float *dz_raw, const float *u, const float *dlog_keep, float dhard,
                            const int32_t *seg, int T, int KV, float scale, float tau, int per_layer);
void dms_cpu_dms_neuron_take(void *ctx, float *out, float *q, int T, int n_heads, int n_kv_heads, int head_dim,
                             int zero);
void dms_cpu_dms_neuron_put(void *ctx, float *q, const float *in, int T, int n_heads, int n_kv_heads,
                            int head_dim);

#endif
