/* cpu_ops.c - the CPU reference kernels: fp32, OpenBLAS for matrix
 * products, OpenMP across rows/heads for the rest. Readable first: these are
 * the oracle every other backend is checked against. */
#include "kernels/cpu/cpu_ops.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"

/* Rows of a bf16 weight converted per block before sgemm. */
#define BF16_BLOCK_ROWS 256

void dms_cpu_matmul(void *ctx, float *out, const float *x, const dms_mat *w, const float *bias, int n) {
    (void)ctx;
    const int k = w->cols, m = w->rows;
    if (w->dtype == DMS_F32) {
        const float *W = w->data;
        if (n == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, m, k, 1.0f, W, k, x, 1, 0.0f, out, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, k, 1.0f, x, k, W, k, 0.0f,
                        out, m);
    } else { /* DMS_BF16: widen a block of rows at a time, then the same BLAS call */
        const uint16_t *W = w->data;
        float *blk = malloc(sizeof(float) * (size_t)BF16_BLOCK_ROWS * (size_t)k);
        for (int r0 = 0; r0 < m; r0 += BF16_BLOCK_ROWS) {
            int rows = m - r0 < BF16_BLOCK_ROWS ? m - r0 : BF16_BLOCK_ROWS;
#pragma omp parallel for
            for (long i = 0; i < (long)rows * k; i++) blk[i] = dms_bf16_to_f32(W[(size_t)r0 * k + i]);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, rows, k, 1.0f, x, k, blk, k, 0.0f,
                        out + r0, m);
        }
        free(blk);
    }
    if (bias) {
#pragma omp parallel for if (n > 4)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++) out[(size_t)i * m + j] += bias[j];
    }
}

void dms_cpu_rmsnorm(void *ctx, float *out, const float *x, const float *w, int rows, int dim, float eps) {
    (void)ctx;
#pragma omp parallel for if (rows > 16)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float *o = out + (size_t)r * dim;
        double ss = 0.0;
        for (int i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
        float inv = 1.0f / sqrtf((float)(ss / dim) + eps);
        for (int i = 0; i < dim; i++) o[i] = xr[i] * inv * w[i];
    }
}

void dms_cpu_rotate_half(float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads, int head_dim,
                         float dir) {
    const int half = head_dim / 2;
#pragma omp parallel for if (n > 4)
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < half; i++) {
            float ang = (float)pos[t] * inv_freq[i];
            float c = cosf(ang), s = dir * sinf(ang);
            for (int h = 0; h < n_heads; h++) {
                float *v = x + ((size_t)t * n_heads + h) * head_dim;
                float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

void dms_cpu_rope(void *ctx, float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads,
                  int head_dim) {
    (void)ctx;
    dms_cpu_rotate_half(x, pos, inv_freq, n, n_heads, head_dim, 1.0f);
}

void dms_cpu_attention(void *ctx, float *out, const float *q, const float *k, const float *v,
                       const int32_t *q_pos, int n_q, int n_kv, int n_heads, int n_kv_heads,
                       int head_dim, float scale) {
    (void)ctx;
    const int group = n_heads / n_kv_heads;
    const size_t q_stride = (size_t)n_heads * head_dim, kv_stride = (size_t)n_kv_heads * head_dim;
#pragma omp parallel
    {
        float *scores = malloc(sizeof(float) * (size_t)(n_kv > 0 ? n_kv : 1));
#pragma omp for collapse(2) schedule(dynamic)
        for (int i = 0; i < n_q; i++) {
            for (int h = 0; h < n_heads; h++) {
                const float *qi = q + i * q_stride + (size_t)h * head_dim;
                const int kh = h / group;
                int last = q_pos[i] < n_kv - 1 ? q_pos[i] : n_kv - 1;
                float mx = -INFINITY;
                for (int j = 0; j <= last; j++) {
                    const float *kj = k + j * kv_stride + (size_t)kh * head_dim;
                    float s = 0.0f;
                    for (int d = 0; d < head_dim; d++) s += qi[d] * kj[d];
                    s *= scale;
                    scores[j] = s;
                    if (s > mx) mx = s;
                }
                float sum = 0.0f;
                for (int j = 0; j <= last; j++) {
                    scores[j] = expf(scores[j] - mx);
                    sum += scores[j];
                }
                float *o = out + i * q_stride + (size_t)h * head_dim;
                memset(o, 0, sizeof(float) * head_dim);
                for (int j = 0; j <= last; j++) {
                    const float p = scores[j] / sum;
                    const float *vj = v + j * kv_stride + (size_t)kh * head_dim;
                    for (int d = 0; d < head_dim; d++) o[d] += p * vj[d];
                }
            }
        }
        free(scores);
    }
}

void dms_cpu_swiglu(void *ctx, float *out, const float *gate, const float *up, size_t n) {
    (void)ctx;
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void dms_cpu_add(void *ctx, float *y, const float *x, size_t n) {
    (void)ctx;
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

void dms_cpu_axpy(void *ctx, float *y, float a, const float *x, size_t n) {
    (void)ctx;
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

void dms_cpu_embedding(void *ctx, float *out, const dms_mat *table, const int32_t *ids, int n) {
    (void)ctx;
    const int dim = table->cols;
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t)i * dim;
        if (table->dtype == DMS_F32) {
            memcpy(o, (const float *)table->data + (size_t)ids[i] * dim, sizeof(float) * dim);
        } else {
            const uint16_t *row = (const uint16_t *)table->data + (size_t)ids[i] * dim;
            for (int d = 0; d < dim; d++) o[d] = dms_bf16_to_f32(row[d]);
        }
    }
}

const dms_backend dms_backend_cpu = {
    .name = "cpu",
    .alloc = dms_cpu_alloc,
    .free = dms_cpu_free,
    .upload = dms_cpu_memcpy,
    .download = dms_cpu_memcpy,
    .copy = dms_cpu_memcpy,
    .sync = dms_cpu_sync,
    .matmul = dms_cpu_matmul,
    .rmsnorm = dms_cpu_rmsnorm,
    .rope = dms_cpu_rope,
    .attention = dms_cpu_attention,
    .swiglu = dms_cpu_swiglu,
    .add = dms_cpu_add,
    .embedding = dms_cpu_embedding,
    .attention_dms_fwd = dms_cpu_attention_dms_fwd,
    .attention_dms_bwd = dms_cpu_attention_dms_bwd,
    .matmul_bwd_x = dms_cpu_matmul_bwd_x,
    .matmul_bwd_w = dms_cpu_matmul_bwd_w,
    .rmsnorm_bwd = dms_cpu_rmsnorm_bwd,
    .rope_bwd = dms_cpu_rope_bwd,
    .swiglu_bwd = dms_cpu_swiglu_bwd,
    .kd_chunk = dms_cpu_kd_chunk,
    .adamw = dms_cpu_adamw,
    .axpy = dms_cpu_axpy,
    .sumsq = dms_cpu_sumsq,
    .dms_noise = dms_cpu_dms_noise,
    .dms_decide = dms_cpu_dms_decide,
    .dms_decide_bwd = dms_cpu_dms_decide_bwd,
    .dms_neuron_take = dms_cpu_dms_neuron_take,
    .dms_neuron_put = dms_cpu_dms_neuron_put,
};
