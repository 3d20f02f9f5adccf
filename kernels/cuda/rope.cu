/* rope.cu - rotary position embedding (rotate-half pairing, as Hugging
 * Face) and its backward, the rotation by the opposite angle. Twin of
 * kernels/cpu/rope.c: one thread per (token, head, pair). */
#include "kernels/cuda/cuda_internal.cuh"

/* Rotates pair (i, i + half) of every head vector by dir * pos * inv_freq[i]. */
__global__ void k_rotate_half(float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads,
                              int head_dim, float dir) {
    const int half = head_dim / 2;
    CU_FOR(idx, (size_t)n * n_heads * half) {
        const int i = (int)(idx % half);
        const size_t th = idx / half; /* token * n_heads + head */
        const size_t t = th / n_heads;
        const float ang = (float)pos[t] * inv_freq[i];
        const float co = cosf(ang), s = dir * sinf(ang);
        float *v = x + th * head_dim;
        const float a = v[i], b = v[i + half];
        v[i] = a * co - b * s;
        v[i + half] = b * co + a * s;
    }
}

static void rotate_half(cu_ctx *c, const char *op, float *x, const int32_t *pos, const float *inv_freq, int n,
                        int n_heads, int head_dim, float dir) {
    const size_t total = (size_t)(n > 0 ? n : 0) * (n_heads > 0 ? n_heads : 0) * (head_dim / 2);
    if (!total) return;
    k_rotate_half<<<cu_blocks(total), CU_THREADS, 0, c->stream>>>(x, pos, inv_freq, n, n_heads, head_dim, dir);
    cu_check(c, op);
}

void cu_rope(void *ctx, float *x, const int32_t *pos, const float *inv_freq, int n, int n_heads, int head_dim) {
    rotate_half((cu_ctx *)ctx, "rope", x, pos, inv_freq, n, n_heads, head_dim, 1.0f);
}

void cu_rope_bwd(void *ctx, float *dx, const int32_t *pos, const float *inv_freq, int n, int n_heads,
                 int head_dim) {
    /* A rotation's transpose is the rotation by the opposite angle. */
    rotate_half((cu_ctx *)ctx, "rope_bwd", dx, pos, inv_freq, n, n_heads, head_dim, -1.0f);
}
