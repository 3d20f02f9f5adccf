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
void dms_cpu_rope(void *ctx, float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads,
                  int head_dim);
void dms_cpu_attention(void *ctx, float *out, const float *q, const float *k, const float *v,
                       const int32_t *q_pos, int n_q, int n_kv, int n_heads, int n_kv_heads,
                       int head_dim, float scale);
void dms_cpu_swiglu(void *ctx, float *out, const float *gate, const float *up, size_t n);
void dms_cpu_add(void *ctx, float *y, const float *x, size_t n);
void dms_cpu_embedding(void *ctx, float *out, const dms_mat *table, const int32_t *ids, int n);

#endif
