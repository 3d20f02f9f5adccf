/* test_grad.c - checks the CPU training ops: every backward op against
 * central finite differences of its forward, DMS attention against a naive
 * dense (mask + softmax) implementation in double, and AdamW / KD / sumsq
 * against hand-computed values. DMS_GRAD_VERBOSE=1 prints the finite-difference
 * errors, DMS_GRAD_BENCH=1 also times attention at T=1024. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu/cpu_ops.h"
#include "core/half.h"
#include "tests/check.h"

/* ---- helpers ---- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float frand(float lo, float hi) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 2685821657736338717ull;
    return lo + (hi - lo) * (float)((r >> 40) / 16777216.0);
}
static float *rand_buf(size_t n, float lo, float hi) {
    float *x = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) x[i] = frand(lo, hi);
    return x;
}
static float *dup_buf(const float *x, size_t n) {
    float *y = malloc(sizeof(float) * n);
    memcpy(y, x, sizeof(float) * n);
    return y;
}
static double dot_fd(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}
static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}
/* ||a - b|| / ||b|| with b in double */
static double rel_err_d(const float *a, const double *b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num) / (sqrt(den) + 1e-30);
}

typedef double (*loss_fn)(void *st);

/* Compares the analytic gradient g[n] with central differences of fn with
 * respect to x[n]: the norm of the difference relative to the norm of the
 * gradient, and each element within atol + rtol_el * |numeric|. */
static void fd_check(const char *name, float *x, const float *g, size_t n, loss_fn fn, void *st,
                     float h, double rtol_norm, double atol, double rtol_el) {
    double diff2 = 0.0, g2 = 0.0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        const float x0 = x[i];
        x[i] = x0 + h;
        const float xp = x[i];
        const double lp = fn(st);
        x[i] = x0 - h;
        const float xm = x[i];
        const double lm = fn(st);
        x[i] = x0;
        const double num = (lp - lm) / ((double)xp - (double)xm);
        const double d = num - g[i];
        diff2 += d * d;
        g2 += (double)g[i] * g[i];
        if (!(fabs(d) <= atol + rtol_el * fabs(num))) {
            if (bad < 5) fprintf(stderr, "  %s[%zu]: analytic %.7g numeric %.7g\n", name, i, g[i], num);
            bad++;
        }
    }
    if (getenv("DMS_GRAD_VERBOSE"))
        printf("%-24s n=%-4zu |g-fd|/|g| = %.2e\n", name, n, sqrt(diff2) / sqrt(g2));
    CHECK_MSG(g2 > 0.0, "%s: gradient is identically zero", name);
    CHECK_MSG(sqrt(diff2) <= rtol_norm * sqrt(g2), "%s: |g - fd| / |g| = %.3g", name,
              sqrt(diff2) / sqrt(g2));
    CHECK_MSG(bad == 0, "%s: %d of %zu elements off", name, bad, n);
}

/* ---- naive dense DMS attention in double (the oracle) ---- */

static int biased(int i, int j, int window) { return i - j > window; }

/* P[h][i][j] probabilities (T*T per head) and out/lse */
static void naive_probs(double *P, double *lse, const float *q, const float *k, const float *log_keep,
                        const int32_t *seg, int T, int H, int KV, int hd, int window, float scale) {
    const int group = H / KV;
    for (int h = 0; h < H; h++)
        for (int i = 0; i < T; i++) {
            double *p = P + ((size_t)h * T + i) * T;
            double mx = -INFINITY;
            for (int j = 0; j < T; j++) {
                if (j > i || seg[j] != seg[i]) {
                    p[j] = -INFINITY;
                    continue;
                }
                double s = 0.0;
                for (int d = 0; d < hd; d++)
                    s += (double)q[((size_t)i * H + h) * hd + d] * k[((size_t)j * KV + h / group) * hd + d];
                s *= scale;
                if (log_keep && biased(i, j, window)) s += log_keep[(size_t)j * KV + h / group];
                p[j] = s;
                if (s > mx) mx = s;
            }
            double sum = 0.0;
            for (int j = 0; j < T; j++) sum += (p[j] == -INFINITY) ? 0.0 : exp(p[j] - mx);
            for (int j = 0; j < T; j++) p[j] = (p[j] == -INFINITY) ? 0.0 : exp(p[j] - mx) / sum;
            if (lse) lse[(size_t)i * H + h] = mx + log(sum);
        }
}

static void naive_attn(double *out, double *lse, const float *q, const float *k, const float *v,
                       const float *log_keep, const int32_t *seg, int T, int H, int KV, int hd,
                       int window, float scale) {
    const int group = H / KV;
    double *P = malloc(sizeof(double) * (size_t)H * T * T);
    naive_probs(P, lse, q, k, log_keep, seg, T, H, KV, hd, window, scale);
    for (int h = 0; h < H; h++)
        for (int i = 0; i < T; i++)
            for (int d = 0; d < hd; d++) {
                double o = 0.0;
                for (int j = 0; j < T; j++)
                    o += P[((size_t)h * T + i) * T + j] * v[((size_t)j * KV + h / group) * hd + d];
                out[((size_t)i * H + h) * hd + d] = o;
            }
    free(P);
}

/* dense backward in double: dS = P (dP - rowsum(P dP)) */
static void naive_attn_bwd(double *dq, double *dk, double *dv, double *dlk, const float *dout,
                           const float *q, const float *k, const float *v, const float *log_keep,
                           const int32_t *seg, int T, int H, int KV, int hd, int window, float scale) {
    const int group = H / KV;
    double *P = malloc(sizeof(double) * (size_t)H * T * T);
    double *dS = malloc(sizeof(double) * (size_t)T);
    naive_probs(P, NULL, q, k, log_keep, seg, T, H, KV, hd, window, scale);
    memset(dq, 0, sizeof(double) * (size_t)T * H * hd);
    memset(dk, 0, sizeof(double) * (size_t)T * KV * hd);
    memset(dv, 0, sizeof(double) * (size_t)T * KV * hd);
    memset(dlk, 0, sizeof(double) * (size_t)T * KV);
    for (int h = 0; h < H; h++) {
        const int kh = h / group;
        for (int i = 0; i < T; i++) {
            const double *p = P + ((size_t)h * T + i) * T;
            const float *doi = dout + ((size_t)i * H + h) * hd;
            double rs = 0.0;
            for (int j = 0; j < T; j++) {
                double dp = 0.0;
                for (int d = 0; d < hd; d++) dp += (double)doi[d] * v[((size_t)j * KV + kh) * hd + d];
                dS[j] = dp;
                rs += p[j] * dp;
            }
            for (int j = 0; j < T; j++) {
                if (p[j] == 0.0) continue;
                const double ds = p[j] * (dS[j] - rs);
                for (int d = 0; d < hd; d++) {
                    dq[((size_t)i * H + h) * hd + d] += scale * ds * k[((size_t)j * KV + kh) * hd + d];
                    dk[((size_t)j * KV + kh) * hd + d] += scale * ds * q[((size_t)i * H + h) * hd + d];
                    dv[((size_t)j * KV + kh) * hd + d] += p[j] * doi[d];
                }
                if (biased(i, j, window)) dlk[(size_t)j * KV + kh] += ds;
            }
        }
    }
    free(dS);
    free(P);
}

/* ---- attention problem ---- */

typedef struct {
    int T, H, KV, hd, window;
    float scale;
    float *q, *k, *v, *lk, *R, *out, *lse;
    int32_t *seg;
    int use_lk;
} attn_prob;

static void attn_init(attn_prob *a, int T, int H, int KV, int hd, int window, const int32_t *seg) {
    a->T = T, a->H = H, a->KV = KV, a->hd = hd, a->window = window;
    a->scale = 1.0f / sqrtf((float)hd);
    a->q = rand_buf((size_t)T * H * hd, -1.5f, 1.5f);
    a->k = rand_buf((size_t)T * KV * hd, -1.5f, 1.5f);
    a->v = rand_buf((size_t)T * KV * hd, -1.0f, 1.0f);
    a->lk = rand_buf((size_t)T * KV, -3.0f, 0.0f);
    a->R = rand_buf((size_t)T * H * hd, -1.0f, 1.0f);
    a->out = malloc(sizeof(float) * (size_t)T * H * hd);
    a->lse = malloc(sizeof(float) * (size_t)T * H);
    a->seg = malloc(sizeof(int32_t) * (size_t)T);
    memcpy(a->seg, seg, sizeof(int32_t) * (size_t)T);
    a->use_lk = 1;
}
static void attn_free(attn_prob *a) {
    free(a->q), free(a->k), free(a->v), free(a->lk), free(a->R), free(a->out), free(a->lse), free(a->seg);
}
static void attn_fwd(attn_prob *a) {
    dms_cpu_attention_dms_fwd(NULL, a->out, a->lse, a->q, a->k, a->v, a->use_lk ? a->lk : NULL, a->seg,
                              a->T, a->H, a->KV, a->hd, a->window, a->scale);
}
static double attn_loss(void *st) {
    attn_prob *a = st;
    attn_fwd(a);
    return dot_fd(a->R, a->out, (size_t)a->T * a->H * a->hd);
}

/* forward vs the naive oracle */
static void check_attn_vs_naive(const char *name, attn_prob *a) {
    const size_t no = (size_t)a->T * a->H * a->hd, nl = (size_t)a->T * a->H;
    double *o = malloc(sizeof(double) * no), *l = malloc(sizeof(double) * nl);
    naive_attn(o, l, a->q, a->k, a->v, a->use_lk ? a->lk : NULL, a->seg, a->T, a->H, a->KV, a->hd,
               a->window, a->scale);
    attn_fwd(a);
    double eo = 0.0, el = 0.0;
    for (size_t i = 0; i < no; i++) eo = fmax(eo, fabs(a->out[i] - o[i]));
    for (size_t i = 0; i < nl; i++) el = fmax(el, fabs(a->lse[i] - l[i]) / (1.0 + fabs(l[i])));
    CHECK_MSG(eo < 2e-5, "%s: out max err %.3g", name, eo);
    CHECK_MSG(el < 2e-6, "%s: lse max rel err %.3g", name, el);
    free(o), free(l);
}

/* backward vs the naive oracle (covers tiling and document starts) */
static void check_attn_bwd_vs_naive(const char *name, attn_prob *a) {
    const int T = a->T, H = a->H, KV = a->KV, hd = a->hd;
    const size_t nq = (size_t)T * H * hd, nk = (size_t)T * KV * hd, nl = (size_t)T * KV;
    const float *lk = a->use_lk ? a->lk : NULL;
    float *dq = malloc(sizeof(float) * nq), *dk = malloc(sizeof(float) * nk);
    float *dv = malloc(sizeof(float) * nk), *dl = malloc(sizeof(float) * nl);
    double *rq = malloc(sizeof(double) * nq), *rk = malloc(sizeof(double) * nk);
    double *rv = malloc(sizeof(double) * nk), *rl = malloc(sizeof(double) * nl);
    attn_fwd(a);
    dms_cpu_attention_dms_bwd(NULL, dq, dk, dv, dl, a->R, a->out, a->lse, a->q, a->k, a->v, lk, a->seg,
                              T, H, KV, hd, a->window, a->scale);
    naive_attn_bwd(rq, rk, rv, rl, a->R, a->q, a->k, a->v, lk, a->seg, T, H, KV, hd, a->window, a->scale);
    CHECK_MSG(rel_err_d(dq, rq, nq) < 1e-4, "%s: dq rel err %.3g", name, rel_err_d(dq, rq, nq));
    CHECK_MSG(rel_err_d(dk, rk, nk) < 1e-4, "%s: dk rel err %.3g", name, rel_err_d(dk, rk, nk));
    CHECK_MSG(rel_err_d(dv, rv, nk) < 1e-4, "%s: dv rel err %.3g", name, rel_err_d(dv, rv, nk));
    CHECK_MSG(rel_err_d(dl, rl, nl) < 1e-4, "%s: dlog_keep rel err %.3g", name, rel_err_d(dl, rl, nl));
    double e = 0.0;
    for (size_t i = 0; i < nl; i++) e = fmax(e, fabs(dl[i] - rl[i]));
    CHECK_MSG(e < 1e-4, "%s: dlog_keep max err %.3g", name, e);
    free(dq), free(dk), free(dv), free(dl), free(rq), free(rk), free(rv), free(rl);
}

static const int32_t SEG13[13] = {0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1};

static void test_attention_forward(void) {
    attn_prob a;
    attn_init(&a, 13, 4, 2, 8, 3, SEG13);
    check_attn_vs_naive("fwd T=13", &a);
    a.use_lk = 0;
    check_attn_vs_naive("fwd T=13 no log_keep", &a);
    a.use_lk = 1;

    /* a query never sees another document: changing document 0's keys and
     * values leaves document 1's rows bit-identical (and changes doc 0's) */
    {
        const size_t row = (size_t)a.H * a.hd;
        attn_fwd(&a);
        float *ref = dup_buf(a.out, 13 * row);
        for (size_t i = 0; i < 7 * (size_t)a.KV * a.hd; i++) a.k[i] += 0.5f, a.v[i] -= 0.5f;
        attn_fwd(&a);
        CHECK(memcmp(ref + 7 * row, a.out + 7 * row, sizeof(float) * 6 * row) == 0);
        CHECK(max_abs_diff(ref, a.out, 7 * row) > 1e-3);
        free(ref);
    }

    /* window boundary (window = 3): key j = 1 is unbiased for query i = 4
     * (i - j == window) and biased for i = 5 (i - j == window + 1) */
    {
        const size_t row = (size_t)a.H * a.hd;
        attn_fwd(&a);
        float *ref = dup_buf(a.out, 13 * row);
        for (int kh = 0; kh < a.KV; kh++) a.lk[1 * a.KV + kh] -= 2.0f;
        attn_fwd(&a);
        CHECK(memcmp(ref, a.out, sizeof(float) * 5 * row) == 0);        /* rows 0..4 */
        CHECK(max_abs_diff(ref + 5 * row, a.out + 5 * row, row) > 1e-4); /* row 5 */
        CHECK(max_abs_diff(ref + 6 * row, a.out + 6 * row, row) > 1e-4); /* row 6 */
        CHECK(memcmp(ref + 7 * row, a.out + 7 * row, sizeof(float) * 6 * row) == 0); /* doc 1 */
        for (int kh = 0; kh < a.KV; kh++) a.lk[1 * a.KV + kh] += 2.0f;
        free(ref);
    }

    /* log_keep = NULL is the same as all zeros */
    {
        const size_t no = (size_t)13 * a.H * a.hd;
        float *saved = a.lk;
        a.lk = calloc((size_t)13 * a.KV, sizeof(float));
        attn_fwd(&a);
        float *ref = dup_buf(a.out, no);
        a.use_lk = 0;
        attn_fwd(&a);
        CHECK_MSG(max_abs_diff(ref, a.out, no) == 0.0, "NULL vs zero log_keep: %.3g",
                  max_abs_diff(ref, a.out, no));
        a.use_lk = 1;
        free(ref);
        free(a.lk);
        a.lk = saved;
    }
    attn_free(&a);

    /* log_keep = 0 on a single document equals the plain causal attention */
    {
        int32_t seg[13] = {0};
        int32_t pos[13];
        for (int i = 0; i < 13; i++) pos[i] = i;
        attn_init(&a, 13, 4, 2, 8, 3, seg);
        memset(a.lk, 0, sizeof(float) * 13 * 2);
        attn_fwd(&a);
        float *ref = malloc(sizeof(float) * 13 * 4 * 8);
        dms_cpu_attention(NULL, ref, a.q, a.k, a.v, pos, 13, 13, 4, 2, 8, a.scale);
        CHECK_MSG(max_abs_diff(ref, a.out, 13 * 4 * 8) < 1e-5, "vs dms_cpu_attention: %.3g",
                  max_abs_diff(ref, a.out, 13 * 4 * 8));
        free(ref);
        attn_free(&a);
    }

    /* several documents across query tiles; interleaved (non-packed) segs;
     * window 0 and window >= T */
    {
        enum { T = 300 };
        int32_t seg[T];
        for (int i = 0; i < T; i++) seg[i] = i < 50 ? 0 : (i < 190 ? 1 : 2);
        attn_init(&a, T, 4, 1, 16, 20, seg);
        check_attn_vs_naive("fwd T=300 3 docs", &a);
        check_attn_bwd_vs_naive("bwd T=300 3 docs", &a);
        a.window = 0;
        check_attn_vs_naive("fwd T=300 window 0", &a);
        check_attn_bwd_vs_naive("bwd T=300 window 0", &a);
        a.window = T;
        check_attn_vs_naive("fwd T=300 window T", &a);
        a.use_lk = 0, a.window = 20;
        check_attn_bwd_vs_naive("bwd T=300 no log_keep", &a);
        attn_free(&a);

        int32_t seg2[40];
        for (int i = 0; i < 40; i++) seg2[i] = (i % 3 == 0) ? 1 : (i / 7) % 2;
        attn_init(&a, 40, 6, 3, 8, 2, seg2);
        check_attn_vs_naive("fwd interleaved segs", &a);
        check_attn_bwd_vs_naive("bwd interleaved segs", &a);
        attn_free(&a);
    }
}

static void test_attention_backward_fd(void) {
    attn_prob a;
    attn_init(&a, 13, 4, 2, 8, 3, SEG13);
    const int T = a.T, H = a.H, KV = a.KV, hd = a.hd;
    const size_t nq = (size_t)T * H * hd, nk = (size_t)T * KV * hd, nl = (size_t)T * KV;
    float *dq = malloc(sizeof(float) * nq), *dk = malloc(sizeof(float) * nk);
    float *dv = malloc(sizeof(float) * nk), *dl = malloc(sizeof(float) * nl);
    attn_fwd(&a);
    dms_cpu_attention_dms_bwd(NULL, dq, dk, dv, dl, a.R, a.out, a.lse, a.q, a.k, a.v, a.lk, a.seg, T,
                              H, KV, hd, a.window, a.scale);
    fd_check("attn dq", a.q, dq, nq, attn_loss, &a, 1e-3f, 2e-3, 2e-3, 1e-2);
    fd_check("attn dk", a.k, dk, nk, attn_loss, &a, 1e-3f, 2e-3, 2e-3, 1e-2);
    fd_check("attn dv", a.v, dv, nk, attn_loss, &a, 1e-3f, 2e-3, 2e-3, 1e-2);
    fd_check("attn dlog_keep", a.lk, dl, nl, attn_loss, &a, 1e-3f, 2e-3, 2e-3, 1e-2);
    /* both documents have biased keys; the last window+1 keys of each are never biased */
    int nz0 = 0, nz1 = 0;
    for (int j = 0; j < 7 - 4; j++) nz0 += dl[j * KV] != 0.0f;
    for (int j = 7; j < 13 - 4; j++) nz1 += dl[j * KV] != 0.0f;
    CHECK(nz0 == 3 && nz1 == 2);
    for (int j = 3; j < 7; j++) CHECK(dl[j * KV] == 0.0f && dl[j * KV + 1] == 0.0f);
    for (int j = 9; j < 13; j++) CHECK(dl[j * KV] == 0.0f && dl[j * KV + 1] == 0.0f);

    /* log_keep = NULL: dlog_keep is still the gradient at log_keep = 0 */
    memset(a.lk, 0, sizeof(float) * nl);
    a.use_lk = 0;
    attn_fwd(&a);
    dms_cpu_attention_dms_bwd(NULL, dq, dk, dv, dl, a.R, a.out, a.lse, a.q, a.k, a.v, NULL, a.seg, T, H,
                              KV, hd, a.window, a.scale);
    a.use_lk = 1;
    fd_check("attn dlog_keep at NULL", a.lk, dl, nl, attn_loss, &a, 1e-3f, 2e-3, 2e-3, 1e-2);
    /* dlog_keep may be NULL */
    float *dq2 = malloc(sizeof(float) * nq);
    a.use_lk = 0;
    dms_cpu_attention_dms_bwd(NULL, dq2, dk, dv, NULL, a.R, a.out, a.lse, a.q, a.k, a.v, NULL, a.seg, T,
                              H, KV, hd, a.window, a.scale);
    CHECK(memcmp(dq, dq2, sizeof(float) * nq) == 0);
    free(dq2);
    free(dq), free(dk), free(dv), free(dl);
    attn_free(&a);
}

/* ---- rmsnorm ---- */

typedef struct {
    int rows, dim;
    float eps, *x, *w, *R, *y;
} rms_prob;
static double rms_loss(void *st) {
    rms_prob *p = st;
    dms_cpu_rmsnorm(NULL, p->y, p->x, p->w, p->rows, p->dim, p->eps);
    return dot_fd(p->R, p->y, (size_t)p->rows * p->dim);
}

static void test_rmsnorm(void) {
    rms_prob p = {.rows = 5, .dim = 16, .eps = 1e-5f};
    const size_t n = (size_t)p.rows * p.dim;
    p.x = rand_buf(n, -1.0f, 1.0f);
    for (size_t i = 0; i < n; i += 3) p.x[i] += 0.7f; /* a non-zero mean */
    p.w = rand_buf((size_t)p.dim, 0.5f, 1.5f);
    p.R = rand_buf(n, -1.0f, 1.0f);
    p.y = malloc(sizeof(float) * n);
    float *dx = malloc(sizeof(float) * n), *dw = calloc((size_t)p.dim, sizeof(float));
    dms_cpu_rmsnorm_bwd(NULL, dx, dw, p.R, p.x, p.w, p.rows, p.dim, p.eps);
    fd_check("rmsnorm dx", p.x, dx, n, rms_loss, &p, 1e-3f, 2e-3, 1e-3, 1e-2);
    fd_check("rmsnorm dw", p.w, dw, (size_t)p.dim, rms_loss, &p, 1e-3f, 2e-3, 1e-3, 1e-2);
    /* dx aliasing dy; dw accumulates */
    float *buf = dup_buf(p.R, n), *dw2 = malloc(sizeof(float) * p.dim);
    for (int i = 0; i < p.dim; i++) dw2[i] = 1.0f;
    dms_cpu_rmsnorm_bwd(NULL, buf, dw2, buf, p.x, p.w, p.rows, p.dim, p.eps);
    CHECK(max_abs_diff(buf, dx, n) == 0.0);
    double e = 0.0;
    for (int i = 0; i < p.dim; i++) e = fmax(e, fabs(dw2[i] - (1.0 + dw[i])));
    CHECK_MSG(e < 1e-6, "rmsnorm dw accumulate: %.3g", e);
    free(buf), free(dw2), free(dx), free(dw), free(p.x), free(p.w), free(p.R), free(p.y);
}

/* ---- rope ---- */

typedef struct {
    int n, H, hd;
    int32_t *pos;
    float *inv, *x, *R, *y;
} rope_prob;
static double rope_loss(void *st) {
    rope_prob *p = st;
    const size_t n = (size_t)p->n * p->H * p->hd;
    memcpy(p->y, p->x, sizeof(float) * n);
    dms_cpu_rope(NULL, p->y, p->pos, p->inv, p->n, p->H, p->hd);
    return dot_fd(p->R, p->y, n);
}

static void test_rope(void) {
    rope_prob p = {.n = 6, .H = 3, .hd = 8};
    const size_t n = (size_t)p.n * p.H * p.hd;
    int32_t pos[6] = {0, 1, 5, 17, 64, 99};
    float inv[4];
    for (int i = 0; i < 4; i++) inv[i] = powf(10000.0f, -2.0f * i / p.hd);
    p.pos = pos, p.inv = inv;
    p.x = rand_buf(n, -1.0f, 1.0f);
    p.R = rand_buf(n, -1.0f, 1.0f);
    p.y = malloc(sizeof(float) * n);
    float *dx = dup_buf(p.R, n);
    dms_cpu_rope_bwd(NULL, dx, pos, inv, p.n, p.H, p.hd);
    fd_check("rope dx", p.x, dx, n, rope_loss, &p, 1e-3f, 2e-3, 1e-3, 1e-2);
    /* rope_bwd inverts rope */
    float *z = dup_buf(p.x, n);
    dms_cpu_rope(NULL, z, pos, inv, p.n, p.H, p.hd);
    dms_cpu_rope_bwd(NULL, z, pos, inv, p.n, p.H, p.hd);
    CHECK(max_abs_diff(z, p.x, n) < 1e-6);
    free(z), free(dx), free(p.x), free(p.R), free(p.y);
}

/* ---- swiglu ---- */

typedef struct {
    size_t n;
    float *g, *u, *R, *y;
} swi_prob;
static double swi_loss(void *st) {
    swi_prob *p = st;
    dms_cpu_swiglu(NULL, p->y, p->g, p->u, p->n);
    return dot_fd(p->R, p->y, p->n);
}

static void test_swiglu(void) {
    swi_prob p = {.n = 64};
    p.g = rand_buf(p.n, -5.0f, 5.0f);
    p.u = rand_buf(p.n, -2.0f, 2.0f);
    p.R = rand_buf(p.n, -1.0f, 1.0f);
    p.y = malloc(sizeof(float) * p.n);
    float *dg = malloc(sizeof(float) * p.n), *du = malloc(sizeof(float) * p.n);
    dms_cpu_swiglu_bwd(NULL, dg, du, p.R, p.g, p.u, p.n);
    fd_check("swiglu dgate", p.g, dg, p.n, swi_loss, &p, 1e-3f, 2e-3, 1e-3, 1e-2);
    fd_check("swiglu dup", p.u, du, p.n, swi_loss, &p, 1e-3f, 2e-3, 1e-3, 1e-2);
    /* in place: dgate aliases gate, dup aliases up */
    float *g2 = dup_buf(p.g, p.n), *u2 = dup_buf(p.u, p.n);
    dms_cpu_swiglu_bwd(NULL, g2, u2, p.R, g2, u2, p.n);
    CHECK(max_abs_diff(g2, dg, p.n) == 0.0 && max_abs_diff(u2, du, p.n) == 0.0);
    free(g2), free(u2), free(dg), free(du), free(p.g), free(p.u), free(p.R), free(p.y);
}

/* ---- matmul ---- */

typedef struct {
    int n;
    dms_mat w;
    float *x, *b, *R, *y;
} mm_prob;
static double mm_loss(void *st) {
    mm_prob *p = st;
    dms_cpu_matmul(NULL, p->y, p->x, &p->w, p->b, p->n);
    return dot_fd(p->R, p->y, (size_t)p->n * p->w.rows);
}

static void test_matmul(void) {
    /* fp32 weight: dx, dw, db */
    {
        mm_prob p = {.n = 5};
        const int rows = 6, cols = 7;
        float *W = rand_buf((size_t)rows * cols, -1.0f, 1.0f);
        p.w = (dms_mat){.data = W, .dtype = DMS_F32, .rows = rows, .cols = cols};
        p.x = rand_buf((size_t)p.n * cols, -1.0f, 1.0f);
        p.b = rand_buf((size_t)rows, -1.0f, 1.0f);
        p.R = rand_buf((size_t)p.n * rows, -1.0f, 1.0f);
        p.y = malloc(sizeof(float) * p.n * rows);
        float *dx = malloc(sizeof(float) * p.n * cols);
        float *dw = calloc((size_t)rows * cols, sizeof(float)), *db = calloc((size_t)rows, sizeof(float));
        for (int i = 0; i < p.n * cols; i++) dx[i] = NAN; /* overwritten, not accumulated */
        dms_cpu_matmul_bwd_x(NULL, dx, p.R, &p.w, p.n, 0);
        dms_cpu_matmul_bwd_w(NULL, dw, db, p.R, p.x, p.n, rows, cols);
        fd_check("matmul dx f32", p.x, dx, (size_t)p.n * cols, mm_loss, &p, 1e-3f, 2e-3, 1e-3, 1e-2);
        fd_check("matmul dw", W, dw, (size_t)rows * cols, mm_loss, &p, 1e-3f, 2e-3, 1e-3, 1e-2);
        fd_check("matmul db", p.b, db, (size_t)rows, mm_loss, &p, 1e-3f, 2e-3, 1e-3, 1e-2);
        /* accumulation */
        float *dx2 = malloc(sizeof(float) * p.n * cols), *dw2 = malloc(sizeof(float) * rows * cols);
        float *db2 = malloc(sizeof(float) * rows);
        for (int i = 0; i < p.n * cols; i++) dx2[i] = 2.0f;
        for (int i = 0; i < rows * cols; i++) dw2[i] = -1.0f;
        for (int i = 0; i < rows; i++) db2[i] = 0.5f;
        dms_cpu_matmul_bwd_x(NULL, dx2, p.R, &p.w, p.n, 1);
        dms_cpu_matmul_bwd_w(NULL, dw2, db2, p.R, p.x, p.n, rows, cols);
        double e = 0.0;
        for (int i = 0; i < p.n * cols; i++) e = fmax(e, fabs(dx2[i] - (dx[i] + 2.0)));
        for (int i = 0; i < rows * cols; i++) e = fmax(e, fabs(dw2[i] - (dw[i] - 1.0)));
        for (int i = 0; i < rows; i++) e = fmax(e, fabs(db2[i] - (db[i] + 0.5)));
        CHECK_MSG(e < 1e-5, "matmul accumulate: %.3g", e);
        /* db = NULL is allowed */
        dms_cpu_matmul_bwd_w(NULL, dw2, NULL, p.R, p.x, p.n, rows, cols);
        free(dx2), free(dw2), free(db2);
        free(dx), free(dw), free(db), free(W), free(p.x), free(p.b), free(p.R), free(p.y);
    }
    /* bf16 weight with more rows than one conversion block */
    {
        mm_prob p = {.n = 3};
        const int rows = 300, cols = 5;
        uint16_t *W = malloc(sizeof(uint16_t) * rows * cols);
        for (int i = 0; i < rows * cols; i++) W[i] = dms_f32_to_bf16(frand(-1.0f, 1.0f));
        p.w = (dms_mat){.data = W, .dtype = DMS_BF16, .rows = rows, .cols = cols};
        p.x = rand_buf((size_t)p.n * cols, -1.0f, 1.0f);
        p.b = NULL;
        p.R = rand_buf((size_t)p.n * rows, -1.0f, 1.0f);
        p.y = malloc(sizeof(float) * p.n * rows);
        float *dx = malloc(sizeof(float) * p.n * cols);
        for (int i = 0; i < p.n * cols; i++) dx[i] = NAN;
        dms_cpu_matmul_bwd_x(NULL, dx, p.R, &p.w, p.n, 0);
        fd_check("matmul dx bf16", p.x, dx, (size_t)p.n * cols, mm_loss, &p, 1e-3f, 2e-3, 2e-3, 1e-2);
        float *dx2 = malloc(sizeof(float) * p.n * cols);
        for (int i = 0; i < p.n * cols; i++) dx2[i] = 3.0f;
        dms_cpu_matmul_bwd_x(NULL, dx2, p.R, &p.w, p.n, 1);
        double e = 0.0;
        for (int i = 0; i < p.n * cols; i++) e = fmax(e, fabs(dx2[i] - (dx[i] + 3.0)));
        CHECK_MSG(e < 1e-5, "matmul bf16 accumulate: %.3g", e);
        free(dx2), free(dx), free(W), free(p.x), free(p.R), free(p.y);
    }
}

/* ---- KD ---- */

typedef struct {
    int rows, V, forward;
    float *zs, *zt, *w, *loss;
} kd_prob;
static double kd_loss(void *st) {
    kd_prob *p = st;
    dms_cpu_kd_chunk(NULL, p->loss, NULL, p->zs, p->zt, p->w, p->rows, p->V, p->forward);
    double s = 0.0;
    for (int r = 0; r < p->rows; r++) s += (double)p->w[r] * p->loss[r];
    return s;
}

/* forward 0: KL(s||t); 1: KL(t||s). Both against a direct double
 * computation and finite differences. */
static void test_kd_dir(int forward) {
    float w[4] = {0.5f, 1.0f, 2.5f, 0.125f};
    kd_prob p = {.rows = 4, .V = 37, .forward = forward, .w = w};
    const size_t n = (size_t)p.rows * p.V;
    p.zs = rand_buf(n, -3.0f, 3.0f);
    p.zt = rand_buf(n, -3.0f, 3.0f);
    for (int v = 0; v < p.V; v++) p.zt[v] = p.zs[v] + 0.1f * p.zt[v]; /* a row close to the teacher */
    p.loss = malloc(sizeof(float) * p.rows);
    float *dz = malloc(sizeof(float) * n);
    dms_cpu_kd_chunk(NULL, p.loss, dz, p.zs, p.zt, w, p.rows, p.V, forward);
    /* loss against a direct double computation */
    for (int r = 0; r < p.rows; r++) {
        double ss = 0.0, st = 0.0, kl = 0.0;
        for (int v = 0; v < p.V; v++) ss += exp(p.zs[r * p.V + v]), st += exp(p.zt[r * p.V + v]);
        for (int v = 0; v < p.V; v++) {
            double ps = exp(p.zs[r * p.V + v]) / ss, pt = exp(p.zt[r * p.V + v]) / st;
            kl += forward ? pt * (log(pt) - log(ps)) : ps * (log(ps) - log(pt));
        }
        CHECK_CLOSE(p.loss[r], kl, 1e-5, 1e-7);
        CHECK(p.loss[r] >= 0.0f);
    }
    fd_check(forward ? "kd forward dzs" : "kd dzs", p.zs, dz, n, kd_loss, &p, 1e-3f, 2e-3, 1e-3, 1e-2);
    /* dzs aliasing zs; huge logits stay finite */
    float *z2 = dup_buf(p.zs, n);
    dms_cpu_kd_chunk(NULL, p.loss, z2, z2, p.zt, w, p.rows, p.V, forward);
    CHECK(max_abs_diff(z2, dz, n) == 0.0);
    for (size_t i = 0; i < n; i++) z2[i] = p.zs[i] * 1000.0f;
    dms_cpu_kd_chunk(NULL, p.loss, z2, z2, p.zt, w, p.rows, p.V, forward);
    int finite = 1;
    for (size_t i = 0; i < n; i++) finite &= isfinite(z2[i]);
    for (int r = 0; r < p.rows; r++) finite &= isfinite(p.loss[r]);
    CHECK(finite);
    free(z2), free(dz), free(p.zs), free(p.zt), free(p.loss);
}

static void test_kd(void) {
    test_kd_dir(0);
    test_kd_dir(1);
}

/* ---- AdamW and sumsq ---- */

static void test_adamw(void) {
    const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.5f;
    float p[3] = {1.0f, -2.0f, 0.5f}, m[3] = {0}, v[3] = {0};
    const float g1[3] = {0.2f, -0.4f, 0.0f}, g2[3] = {-0.6f, 0.1f, 1e-3f};
    double P[3] = {1.0, -2.0, 0.5}, M[3] = {0}, Vv[3] = {0};
    for (int t = 1; t <= 2; t++) {
        const float *g = t == 1 ? g1 : g2;
        dms_cpu_adamw(NULL, p, g, m, v, 3, lr, b1, b2, eps, wd, t, gs);
        for (int i = 0; i < 3; i++) {
            double gi = (double)g[i] * gs;
            P[i] -= (double)lr * wd * P[i];
            M[i] = b1 * M[i] + (1.0 - b1) * gi;
            Vv[i] = b2 * Vv[i] + (1.0 - b2) * gi * gi;
            double mh = M[i] / (1.0 - pow(b1, t)), vh = Vv[i] / (1.0 - pow(b2, t));
            P[i] -= lr * mh / (sqrt(vh) + eps);
        }
    }
    for (int i = 0; i < 3; i++) {
        CHECK_CLOSE(p[i], P[i], 1e-6, 1e-7);
        CHECK_CLOSE(m[i], M[i], 1e-5, 1e-9);
        CHECK_CLOSE(v[i], Vv[i], 1e-5, 1e-12);
    }
}

static void test_sumsq(void) {
    const size_t sizes[3] = {1, 1000, 100003};
    for (int s = 0; s < 3; s++) {
        float *x = rand_buf(sizes[s], -2.0f, 2.0f);
        double ref = 0.0;
        for (size_t i = 0; i < sizes[s]; i++) ref += (double)x[i] * x[i];
        CHECK_CLOSE(dms_cpu_sumsq(NULL, x, sizes[s]), ref, 1e-12, 0.0);
        free(x);
    }
    CHECK(dms_cpu_sumsq(NULL, NULL, 0) == 0.0);
}

/* ---- results do not depend on the thread count (resume is bit-exact) ---- */

static void test_thread_count_independence(void) {
    enum { T = 300 };
    int32_t seg[T];
    for (int i = 0; i < T; i++) seg[i] = i < 90 ? 0 : 1;
    attn_prob a;
    attn_init(&a, T, 4, 2, 16, 17, seg);
    const size_t nq = (size_t)T * 4 * 16, nk = (size_t)T * 2 * 16, nl = (size_t)T * 2;
    float *buf[2][6];
    double ss[2];
    float *x = rand_buf(nq, -1.0f, 1.0f), *w = rand_buf(64, 0.5f, 1.5f);
    const int saved = omp_get_max_threads();
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run == 0 ? 1 : 3);
        float **b = buf[run];
        b[0] = malloc(sizeof(float) * nq), b[1] = malloc(sizeof(float) * nq);
        b[2] = malloc(sizeof(float) * nk), b[3] = malloc(sizeof(float) * nk);
        b[4] = malloc(sizeof(float) * nl), b[5] = calloc(64, sizeof(float));
        attn_fwd(&a);
        memcpy(b[0], a.out, sizeof(float) * nq);
        dms_cpu_attention_dms_bwd(NULL, b[1], b[2], b[3], b[4], a.R, a.out, a.lse, a.q, a.k, a.v, a.lk,
                                  a.seg, T, 4, 2, 16, a.window, a.scale);
        float *dx = malloc(sizeof(float) * nq);
        dms_cpu_rmsnorm_bwd(NULL, dx, b[5], a.R, x, w, (int)(nq / 64), 64, 1e-6f);
        free(dx);
        ss[run] = dms_cpu_sumsq(NULL, a.q, nq) + dms_cpu_sumsq(NULL, x, nq);
    }
    omp_set_num_threads(saved);
    CHECK(memcmp(buf[0][0], buf[1][0], sizeof(float) * nq) == 0);
    CHECK(memcmp(buf[0][1], buf[1][1], sizeof(float) * nq) == 0);
    CHECK(memcmp(buf[0][2], buf[1][2], sizeof(float) * nk) == 0);
    CHECK(memcmp(buf[0][3], buf[1][3], sizeof(float) * nk) == 0);
    CHECK(memcmp(buf[0][4], buf[1][4], sizeof(float) * nl) == 0);
    CHECK(memcmp(buf[0][5], buf[1][5], sizeof(float) * 64) == 0);
    CHECK(ss[0] == ss[1]);
    for (int run = 0; run < 2; run++)
        for (int i = 0; i < 6; i++) free(buf[run][i]);
    free(x), free(w);
    attn_free(&a);
}

/* ---- the backend table exposes them ---- */

static void test_table(void) {
    const dms_backend *be = &dms_cpu_ops;
    CHECK(be->attention_dms_fwd == dms_cpu_attention_dms_fwd);
    CHECK(be->attention_dms_bwd == dms_cpu_attention_dms_bwd);
    CHECK(be->matmul_bwd_x && be->matmul_bwd_w && be->rmsnorm_bwd && be->rope_bwd);
    CHECK(be->swiglu_bwd && be->kd_chunk && be->adamw && be->sumsq);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void bench_attention(void) {
    enum { T = 1024 };
    const int H = 9, KV = 3, hd = 64, reps = 5;
    int32_t *seg = calloc(T, sizeof(int32_t));
    attn_prob a;
    attn_init(&a, T, H, KV, hd, 256, seg);
    float *dq = malloc(sizeof(float) * T * H * hd), *dk = malloc(sizeof(float) * T * KV * hd);
    float *dv = malloc(sizeof(float) * T * KV * hd), *dl = malloc(sizeof(float) * T * KV);
    attn_fwd(&a); /* warm up */
    double t0 = now_s();
    for (int r = 0; r < reps; r++) attn_fwd(&a);
    double t1 = now_s();
    for (int r = 0; r < reps; r++)
        dms_cpu_attention_dms_bwd(NULL, dq, dk, dv, dl, a.R, a.out, a.lse, a.q, a.k, a.v, a.lk, a.seg, T,
                                  H, KV, hd, a.window, a.scale);
    double t2 = now_s();
    printf("bench attention_dms T=%d H=%d KV=%d hd=%d: fwd %.1f ms, bwd %.1f ms\n", T, H, KV, hd,
           1e3 * (t1 - t0) / reps, 1e3 * (t2 - t1) / reps);
    free(dq), free(dk), free(dv), free(dl), free(seg);
    attn_free(&a);
}

int main(void) {
    test_table();
    test_attention_forward();
    test_attention_backward_fd();
    test_rmsnorm();
    test_rope();
    test_swiglu();
    test_matmul();
    test_kd();
    test_adamw();
    test_sumsq();
    test_thread_count_independence();
    if (getenv("DMS_GRAD_BENCH")) bench_attention();
    return dms_check_finish();
}
