/* test_gpu_backend.c - every op of the CUDA backend against the CPU oracle
 * on random inputs at a few shapes (label `gpu`: needs a GPU; run on the
 * device machine). Tolerances: fp32 ops 1e-4 relative, bf16 GEMM 1e-2. */
#include <stdlib.h>

#include "core/half.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/check.h"

static uint64_t rng = 42;
static float frand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}
static float *rand_buf(size_t n) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

static dms_backend gpu;

static float *up(const float *h, size_t n) {
    float *d = gpu.alloc(gpu.ctx, n * sizeof(float));
    gpu.upload(gpu.ctx, d, h, n * sizeof(float));
    return d;
}
static void compare(const char *what, const float *dev, const float *ref, size_t n, double rtol, double atol) {
    float *h = malloc(n * sizeof(float));
    gpu.sync(gpu.ctx);
    gpu.download(gpu.ctx, h, dev, n * sizeof(float));
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)h[i] - ref[i]) > atol + rtol * fabs((double)ref[i])) bad++;
    CHECK_MSG(bad == 0, "%s: %zu of %zu values differ", what, bad, n);
    free(h);
}

int main(void) {
    dms_err err = {0};
    if (dms_backend_cuda_create(&gpu, 0, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        CHECK_MSG(0, "no GPU: this suite is labelled gpu and must run on the device machine");
        return dms_check_finish();
    }
    const int n = 7, k = 96, m = 80, H = 4, KV = 2, hd = 16;
    /* matmul f32 + bias, and bf16 weights */
    float *x = rand_buf((size_t)n * k), *w = rand_buf((size_t)m * k), *b = rand_buf(m);
    float *ref = malloc(sizeof(float) * n * m);
    dms_mat wc = {w, DMS_F32, m, k};
    dms_cpu_matmul(NULL, ref, x, &wc, b, n);
    dms_mat wg = {up(w, (size_t)m * k), DMS_F32, m, k};
    float *xg = up(x, (size_t)n * k), *bg = up(b, m), *og = gpu.alloc(gpu.ctx, sizeof(float) * n * m);
    gpu.matmul(gpu.ctx, og, xg, &wg, bg, n);
    compare("matmul f32", og, ref, (size_t)n * m, 1e-4, 1e-5);
    uint16_t *w16 = malloc(sizeof(uint16_t) * m * k);
    float *w16f = malloc(sizeof(float) * m * k), *x16f = malloc(sizeof(float) * n * k);
    for (int i = 0; i < m * k; i++) w16f[i] = dms_bf16_to_f32(w16[i] = dms_f32_to_bf16(w[i]));
    for (int i = 0; i < n * k; i++) x16f[i] = dms_bf16_to_f32(dms_f32_to_bf16(x[i]));
    dms_mat w16c = {w16f, DMS_F32, m, k};
    dms_cpu_matmul(NULL, ref, x16f, &w16c, NULL, n);
    dms_mat w16g = {gpu.alloc(gpu.ctx, sizeof(uint16_t) * m * k), DMS_BF16, m, k};
    gpu.upload(gpu.ctx, w16g.data, w16, sizeof(uint16_t) * m * k);
    gpu.matmul(gpu.ctx, og, xg, &w16g, NULL, n);
    compare("matmul bf16", og, ref, (size_t)n * m, 1e-3, 1e-3);

    /* rmsnorm */
    float *nw = rand_buf(k);
    dms_cpu_rmsnorm(NULL, ref, x, nw, n, k, 1e-6f);
    float *nwg = up(nw, k);
    gpu.rmsnorm(gpu.ctx, og, xg, nwg, n, k, 1e-6f);
    compare("rmsnorm", og, ref, (size_t)n * k, 1e-4, 1e-5);

    /* rope */
    int32_t pos[7] = {0, 1, 2, 5, 9, 100, 4000};
    float inv[8];
    for (int i = 0; i < hd / 2; i++) inv[i] = powf(10000.0f, -2.0f * i / hd);
    float *qh = rand_buf((size_t)n * H * hd);
    float *qg = up(qh, (size_t)n * H * hd), *invg = up(inv, hd / 2);
    int32_t *posg = gpu.alloc(gpu.ctx, sizeof pos);
    gpu.upload(gpu.ctx, posg, pos, sizeof pos);
    dms_cpu_rope(NULL, qh, pos, inv, n, H, hd);
    gpu.rope(gpu.ctx, qg, posg, invg, n, H, hd);
    compare("rope", qg, qh, (size_t)n * H * hd, 1e-4, 1e-4);

    /* attention: 5 queries at positions 3..7 against 8 cached keys */
    const int nq = 5, nkv = 8;
    int32_t qpos[5] = {3, 4, 5, 6, 7};
    float *q = rand_buf((size_t)nq * H * hd), *kk = rand_buf((size_t)nkv * KV * hd), *vv = rand_buf((size_t)nkv * KV * hd);
    float *aref = malloc(sizeof(float) * nq * H * hd);
    dms_cpu_attention(NULL, aref, q, kk, vv, qpos, nq, nkv, H, KV, hd, 0.25f);
    int32_t *qposg = gpu.alloc(gpu.ctx, sizeof qpos);
    gpu.upload(gpu.ctx, qposg, qpos, sizeof qpos);
    float *ag = gpu.alloc(gpu.ctx, sizeof(float) * nq * H * hd);
    gpu.attention(gpu.ctx, ag, up(q, (size_t)nq * H * hd), up(kk, (size_t)nkv * KV * hd), up(vv, (size_t)nkv * KV * hd),
                  qposg, nq, nkv, H, KV, hd, 0.25f);
    compare("attention", ag, aref, (size_t)nq * H * hd, 1e-4, 1e-5);

    /* swiglu, add */
    float *g = rand_buf(1000), *u = rand_buf(1000), *sref = malloc(sizeof(float) * 1000);
    dms_cpu_swiglu(NULL, sref, g, u, 1000);
    float *gg = up(g, 1000), *ug = up(u, 1000);
    gpu.swiglu(gpu.ctx, gg, gg, ug, 1000);
    compare("swiglu", gg, sref, 1000, 1e-5, 1e-6);
    dms_cpu_add(NULL, sref, u, 1000);
    gpu.add(gpu.ctx, gg, ug, 1000);
    compare("add", gg, sref, 1000, 1e-5, 1e-6);

    /* embedding */
    int32_t ids[3] = {5, 0, 79};
    dms_mat tab = {w, DMS_F32, m, k};
    float *eref = malloc(sizeof(float) * 3 * k);
    dms_cpu_embedding(NULL, eref, &tab, ids, 3);
    int32_t *idsg = gpu.alloc(gpu.ctx, sizeof ids);
    gpu.upload(gpu.ctx, idsg, ids, sizeof ids);
    float *eg = gpu.alloc(gpu.ctx, sizeof(float) * 3 * k);
    gpu.embedding(gpu.ctx, eg, &wg, idsg, 3);
    compare("embedding", eg, eref, (size_t)3 * k, 0, 0);

    dms_backend_cuda_destroy(&gpu);
    return dms_check_finish();
}
