/* cpu_ops.h - the CPU reference kernels behind dms_cpu_ops, one op (with
 * its backward) per file in kernels/cpu/. Declared here so that tests can
 * call one kernel directly as an oracle. Semantics: kernels/backend.h. */
#ifndef DMS_CPU_OPS_H
#define DMS_CPU_OPS_H

#include "core/err.h"
#include "kernels/backend.h"

/* Creates the CPU backend (its context holds the sticky status). */
int dms_backend_cpu_create(dms_backend *be, dms_err *err);
void dms_backend_cpu_destroy(dms_backend *be);
/* Records a failure in the sticky status (ctx may be NULL: stderr only). */
void dms_cpu_fail(void *ctx, const char *op, const char *what);
/* The kept-dtype kernels the backend chose from CPUID when it was created
 * (kernels/cpu/quant.h); NULL for a NULL ctx. */
const struct dms_cpu_kernels *dms_cpu_ctx_kernels(void *ctx);
/* Weight dtypes matmul and embedding read as they are: all of dms_dtype. */
int dms_cpu_supports_dtype(void *ctx, dms_dtype t);

/* narrow.c: fp32 -> f16 / bf16 rows (the 16-bit KV cache) */
void dms_cpu_narrow(void *ctx, void *dst, dms_dtype t, const float *src, size_t n);

/* memory (backend_cpu.c) */
void *dms_cpu_alloc(void *ctx, size_t bytes);
void dms_cpu_free(void *ctx, void *p);
void dms_cpu_memcpy(void *ctx, void *dst, const void *src, size_t bytes);
void dms_cpu_sync(void *ctx);
int dms_cpu_status(void *ctx, char *msg, size_t cap);

/* elementwise.c */
void dms_cpu_zero(void *ctx, float *x, size_t n);
void dms_cpu_zero_f64(void *ctx, double *x, size_t n);
void dms_cpu_scale(void *ctx, float *x, float a, size_t n);
void dms_cpu_add(void *ctx, float *y, const float *x, size_t n);
void dms_cpu_axpy(void *ctx, float *y, float a, const float *x, size_t n);
double dms_cpu_sumsq(void *ctx, const float *x, size_t n);
void dms_cpu_sum_acc(void *ctx, double *acc, const float *x, const float *w, size_t n);

/* matmul.c */
void dms_cpu_matmul(void *ctx, float *out, const float *x, const dms_mat *w, const float *bias, int n);
void dms_cpu_matmul_multi(void *ctx, int count, float *const *outs, const float *x, const dms_mat *const *ws,
                          const float *const *biases, int n);
void dms_cpu_matmul_bwd_x(void *ctx, float *dx, const float *dy, const dms_mat *w, int n, int accumulate);
void dms_cpu_matmul_bwd_w(void *ctx, float *dw, float *db, const float *dy, const float *x, int n,
                          int rows, int cols);

/* rmsnorm.c */
void dms_cpu_rmsnorm(void *ctx, float *out, const float *x, const float *w, int rows, int dim, float eps);
void dms_cpu_rmsnorm_bwd(void *ctx, float *dx, float *dw, const float *dy, const float *x,
                         const float *w, int rows, int dim, float eps);

/* rope.c: rotate-half RoPE by dir * angle (dir = -1 undoes it: the backward) */
void dms_cpu_rotate_half(float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads, int head_dim,
                         float dir);
void dms_cpu_rope(void *ctx, float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads,
                  int head_dim);
void dms_cpu_rope_bwd(void *ctx, float *dx, const int32_t *pos, const float *inv_freq, int n,
                      int n_heads, int head_dim);

/* attention.c (over a KV cache) */
void dms_cpu_attention(void *ctx, float *out, const float *q, const float *k, const float *v,
                       const int32_t *q_pos, int n_q, int n_kv, int n_heads, int n_kv_heads,
                       int head_dim, float scale);

/* attention_paged.c (the runtime's paged per-head caches) */
void dms_cpu_attention_paged(void *ctx, float *out, const float *q, const int32_t *q_pos, int n_q,
                             const dms_kv_lane_view *lanes, int n_heads, int n_kv_heads, int head_dim, int block_size,
                             int window, float scale);

/* attention_dms.c (packed training rows) */
void dms_cpu_attention_dms_fwd(void *ctx, float *out, float *lse, const float *q, const float *k,
                               const float *v, const float *log_keep, const int32_t *seg, int T,
                               int n_heads, int n_kv_heads, int head_dim, int window, float scale);
void dms_cpu_attention_dms_bwd(void *ctx, float *dq, float *dk, float *dv, float *dlog_keep,
                               const float *dout, const float *out, const float *lse, const float *q,
                               const float *k, const float *v, const float *log_keep,
                               const int32_t *seg, int T, int n_heads, int n_kv_heads, int head_dim,
                               int window, float scale);

/* swiglu.c */
void dms_cpu_swiglu(void *ctx, float *out, const float *gate, const float *up, size_t n);
void dms_cpu_swiglu_bwd(void *ctx, float *dgate, float *dup, const float *dout, const float *gate,
                        const float *up, size_t n);

/* attention_dms.c: attention guidance's target statistic */
void dms_cpu_attention_future_max(void *ctx, float *imp, const float *q, const float *k, const float *v,
                                  const float *lse, const int32_t *seg, int T, int n_heads, int n_kv_heads,
                                  int head_dim, int window, float scale, int mean);

/* embedding.c */
void dms_cpu_embedding(void *ctx, float *out, const dms_mat *table, const int32_t *ids, int n);

/* kd.c */
void dms_cpu_kd_chunk(void *ctx, float *loss, float *dzs, const float *zs, const float *zt,
                      const float *weight, int rows, int V, int forward);

/* adamw.c */
void dms_cpu_adamw(void *ctx, float *p, const float *g, float *m, float *v, size_t n, float lr,
                   float beta1, float beta2, float eps, float weight_decay, int t, float grad_scale);

/* dms_decide.c: noise, decisions, their gradient, the compression loss */
void dms_cpu_dms_noise(void *ctx, float *noise, int T, int KV, uint64_t seed, int64_t step, int layer,
                       int64_t tok0);
void dms_cpu_dms_decide(void *ctx, float *u, float *log_keep, float *hard, const float *z_raw,
                        const float *noise, const int32_t *seg, const int32_t *pos, int sinks, int T, int KV,
                        float scale, float offset, float tau, int per_layer);
void dms_cpu_dms_decide_bwd(void *ctx, float *dz_raw, const float *u, const float *dlog_keep, const float *dhard,
                            const int32_t *seg, const int32_t *pos, int sinks, int T, int KV, float scale, float tau,
                            int per_layer);
void dms_cpu_dms_comp_grad(void *ctx, float *dhard, int n_dhard, double *comp_acc, double *count, double denom, float target,
                           float weight, float coef);
void dms_cpu_dms_guide_grad(void *ctx, float *dz_raw, double *loss_acc, const float *z_raw, const float *target,
                            const float *mask, int T, int KV, float scale, float offset, float coef, int per_layer);

/* dms_neuron.c: the neuron variant's channel gather/scatter */
void dms_cpu_dms_neuron_take(void *ctx, float *out, float *q, int T, int n_heads, int n_kv_heads, int head_dim,
                             float keep);
void dms_cpu_dms_neuron_put(void *ctx, float *q, const float *in, int T, int n_heads, int n_kv_heads,
                            int head_dim, float keep);

/* Rows of a non-fp32 weight widened at a time before an sgemm (matmul.c). */
#define DMS_CPU_BF16_BLOCK_ROWS 256
/* Fills x[n] with NaN: the output of an op that failed. */
void dms_cpu_fill_nan(float *x, size_t n);

#endif
