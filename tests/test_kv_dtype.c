/* test_kv_dtype.c - the runtime's KV cache in fp16 and bf16
 * (dms_kv_opts.kv_dtype, `--kv-dtype`), against the fp32 cache:
 * 1. narrow: every value comes back from the 16-bit row within half a unit
 *    in the last place (2^-11 relative for f16 normals, 2^-8 for bf16),
 *    rounded to nearest even as core/half.h rounds;
 * 2. attention_paged on 16-bit lanes (long ragged lanes of several
 *    segments, blocks of 7, DMS flags, prefill tiles, with and without the
 *    TOVA/H2O scores):
 *    - against a double-precision reference over the rounded K and V, to
 *      fp32 accuracy (1e-5): the kernel reads the 16-bit rows exactly;
 *    - against the fp32 cache of the unrounded K and V, within the bound
 *      the rounding allows per (query, head): (e^(2 d) - 1) max|v| +
 *      max|dv| + 1e-5, d = max over keys of the score change |dq.k|;
 * 3. the embedded model (Q4_1 weights kept, as `dms generate` runs it)
 *    through the paged runtime, 16-bit cache against fp32 cache on the
 *    parity prompts (tests/test_quant.c's three), in one prefill call and
 *    token by token: logit differences, KL and top-1 within the stated
 *    bounds, and the greedy continuation of the default-model fixture:
 *    with the weights dequantised to fp32, unchanged (or leaving only at a
 *    tie within 0.05 logit); with the weights kept (int8 activations,
 *    whose rounding turns the cache's into ~2 logits, as test_quant shows
 *    for kept vs fp32 weights), leaving only where the f32 cache's top-2
 *    margin is under 1 logit;
 * 4. a DMS model (the tiny Qwen3 fixture with random adapter heads) under
 *    policy dms: the same evictions and logits within 1e-2 relative, with
 *    half the bytes held. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/dtype.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "runtime/generate.h"
#include "runtime/kv_paged.h"
#include "runtime/sampler.h"
#include "tests/check.h"
#include "tests/logit_cmp.h"

static uint64_t rng = 0x6b76;
static double urand(void) { /* [0, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float frand(float lo, float hi) { return lo + (hi - lo) * (float)urand(); }

static const dms_dtype HALVES[2] = {DMS_F16, DMS_BF16};
/* fp32 weights: the greedy continuation may leave the f32 cache's only at a tie this close */
#define GREEDY_FP32_MARGIN 0.05

/* ---- 1. narrow ---- */

static void test_narrow(dms_backend *be) {
    enum { N = 4096 };
    float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
    uint16_t *h = malloc(sizeof(uint16_t) * N);
    for (int i = 0; i < N; i++) x[i] = (float)((urand() - 0.5) * pow(2.0, (double)(i % 24) - 12.0));
    for (int d = 0; d < 2; d++) {
        const dms_dtype t = HALVES[d];
        be->narrow(be->ctx, h, t, x, N);
        dms_dtype_to_f32(t, h, y, N);
        const double ulp = t == DMS_F16 ? pow(2.0, -11) : pow(2.0, -8);
        int bad = 0, rne = 0;
        for (int i = 0; i < N; i++) {
            bad += fabs((double)y[i] - x[i]) > ulp * fabs((double)x[i]) + (t == DMS_F16 ? pow(2.0, -25) : 0);
            rne += h[i] != (t == DMS_F16 ? dms_f32_to_f16(x[i]) : dms_f32_to_bf16(x[i]));
        }
        CHECK_MSG(bad == 0 && rne == 0, "narrow to %s: %d values past half an ulp, %d not rounded to nearest even",
                  dms_dtype_name(t), bad, rne);
    }
    free(x);
    free(y);
    free(h);
}

/* ---- 2. attention_paged on 16-bit lanes ---- */

#define KVH 2
typedef struct {
    int n[KVH], hd, bs;
    float *k[KVH], *v[KVH]; /* [n, hd] host, unrounded */
    int32_t *pos[KVH];
    uint8_t *flag[KVH];
} lanes_case;

/* keys per lane in the score arrays: the longer lane's count, so that
 * every lane's keys fit */
static int score_stride(const lanes_case *lc) { return lc->n[0] > lc->n[1] ? lc->n[0] : lc->n[1]; }

/* Blocks of the lanes in dtype t (fp32 rows rounded through narrow). */
static void build_views(dms_backend *be, const lanes_case *lc, dms_dtype t, dms_kv_lane_view *views, void ***kb,
                        void ***vb, float *score) {
    const size_t row = dms_dtype_bytes(t, (size_t)lc->hd);
    for (int h = 0; h < KVH; h++) {
        const int nb = (lc->n[h] + lc->bs - 1) / lc->bs;
        kb[h] = calloc((size_t)(nb ? nb : 1), sizeof(void *));
        vb[h] = calloc((size_t)(nb ? nb : 1), sizeof(void *));
        for (int b = 0; b < nb; b++) {
            kb[h][b] = calloc((size_t)lc->bs, row);
            vb[h][b] = calloc((size_t)lc->bs, row);
            for (int r = 0; r < lc->bs && b * lc->bs + r < lc->n[h]; r++) {
                const size_t s = (size_t)b * lc->bs + r;
                be->narrow(be->ctx, (char *)kb[h][b] + r * row, t, lc->k[h] + s * lc->hd, (size_t)lc->hd);
                be->narrow(be->ctx, (char *)vb[h][b] + r * row, t, lc->v[h] + s * lc->hd, (size_t)lc->hd);
            }
        }
        views[h] = (dms_kv_lane_view){(const void *const *)kb[h], (const void *const *)vb[h], lc->pos[h], lc->flag[h],
                                      score ? score + (size_t)h * score_stride(lc) : NULL, lc->n[h], t};
    }
}

static void free_views(const lanes_case *lc, void ***kb, void ***vb) {
    for (int h = 0; h < KVH; h++) {
        const int nb = (lc->n[h] + lc->bs - 1) / lc->bs;
        for (int b = 0; b < nb; b++) {
            free(kb[h][b]);
            free(vb[h][b]);
        }
        free(kb[h]);
        free(vb[h]);
    }
}

static float round_to(dms_dtype t, float x) {
    return t == DMS_F16 ? dms_f16_to_f32(dms_f32_to_f16(x)) : t == DMS_BF16 ? dms_bf16_to_f32(dms_f32_to_bf16(x)) : x;
}

/* Double-precision attention over K, V rounded to t; out[nq, H, hd], probabilities into score (may be NULL). Also
 * the rounding bound of each (query, head) against the unrounded cache. */
static void reference(const lanes_case *lc, dms_dtype t, const float *q, const int32_t *qpos, int nq, int H, int window,
                      float scale, double *out, double *score, double *bound) {
    const int G = H / KVH, hd = lc->hd;
    double *w = malloc(sizeof(double) * (size_t)score_stride(lc));
    for (int i = 0; i < nq; i++)
        for (int h = 0; h < H; h++) {
            const int kh = h / G, n = lc->n[kh];
            const float *qi = q + ((size_t)i * H + h) * hd;
            double mx = -INFINITY, sum = 0, delta = 0, vmax = 0, dv = 0;
            for (int s = 0; s < n; s++) {
                const int p = lc->pos[kh][s];
                const int vis = p <= qpos[i] && (qpos[i] - p <= window || !lc->flag[kh][s]);
                double dot = 0, dot32 = 0;
                for (int c = 0; c < hd; c++) {
                    const float k = lc->k[kh][(size_t)s * hd + c], v = lc->v[kh][(size_t)s * hd + c];
                    dot += (double)qi[c] * round_to(t, k);
                    dot32 += (double)qi[c] * k;
                    if (vis) {
                        vmax = fmax(vmax, fabs((double)v));
                        dv = fmax(dv, fabs((double)round_to(t, v) - v));
                    }
                }
                w[s] = vis ? dot * scale : -INFINITY;
                if (vis) delta = fmax(delta, fabs(dot - dot32) * scale);
                mx = fmax(mx, w[s]);
            }
            for (int s = 0; s < n; s++) sum += w[s] = w[s] == -INFINITY ? 0.0 : exp(w[s] - mx);
            for (int c = 0; c < hd; c++) {
                double o = 0;
                for (int s = 0; s < n && sum > 0; s++) o += w[s] / sum * round_to(t, lc->v[kh][(size_t)s * hd + c]);
                out[((size_t)i * H + h) * hd + c] = o;
            }
            for (int s = 0; score && sum > 0 && s < n; s++) score[(size_t)kh * score_stride(lc) + s] += w[s] / sum;
            bound[(size_t)i * H + h] = (exp(2 * delta) - 1) * vmax + dv + 1e-5;
        }
    free(w);
}

static void test_attention(dms_backend *be) {
    static const struct {
        int nq, H, hd, bs, window, n0, n1, scores;
        const char *what;
    } cases[] = {
        {1, 6, 64, 7, 40, 1300, 700, 0, "decode, 3 segments, DMS flags"},
        {19, 4, 64, 16, 1 << 30, 600, 600, 0, "prefill of 19 queries (2 tiles), no eviction window"},
        {3, 4, 40, 7, 25, 300, 90, 1, "scores (TOVA/H2O), odd head size"},
        {1, 2, 8, 5, 4, 1, 2, 1, "tiny lanes"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const int nq = cases[c].nq, H = cases[c].H, hd = cases[c].hd, G = H / KVH;
        lanes_case lc = {{cases[c].n0, cases[c].n1}, hd, cases[c].bs, {0}, {0}, {0}, {0}};
        const int top = cases[c].n0 + nq + 5;
        for (int h = 0; h < KVH; h++) {
            const int n = lc.n[h];
            lc.k[h] = malloc(sizeof(float) * (size_t)n * hd);
            lc.v[h] = malloc(sizeof(float) * (size_t)n * hd);
            lc.pos[h] = malloc(sizeof(int32_t) * (size_t)n);
            lc.flag[h] = malloc((size_t)n);
            for (size_t i = 0; i < (size_t)n * hd; i++) {
                lc.k[h][i] = frand(-1.5f, 1.5f);
                lc.v[h][i] = frand(-1.0f, 1.0f);
            }
            for (int s = 0; s < n; s++) { /* distinct positions below the queries', not sorted */
                lc.pos[h][s] = (top - nq - 1) - (int)(((int64_t)s * 7919) % (top - nq));
                lc.flag[h][s] = urand() < 0.4;
            }
        }
        int32_t qpos[32];
        for (int i = 0; i < nq; i++) qpos[i] = top - nq + i;
        const size_t no = (size_t)nq * H * hd;
        float *q = malloc(sizeof(float) * no), *got = malloc(sizeof(float) * no), *f32 = malloc(sizeof(float) * no);
        for (size_t i = 0; i < no; i++) q[i] = frand(-1.5f, 1.5f);
        double *ref = malloc(sizeof(double) * no), *bound = malloc(sizeof(double) * (size_t)nq * H);
        const size_t ns = (size_t)KVH * score_stride(&lc);
        float *sg = cases[c].scores ? calloc(ns, sizeof(float)) : NULL;
        double *sr = cases[c].scores ? calloc(ns, sizeof(double)) : NULL, *b32 = malloc(sizeof(double) * (size_t)nq * H);
        const float scale = 1.0f / sqrtf((float)hd);
        dms_kv_lane_view views[KVH];
        void **kb[KVH], **vb[KVH];
        /* the fp32 cache */
        reference(&lc, DMS_F32, q, qpos, nq, H, cases[c].window, scale, ref, NULL, b32);
        build_views(be, &lc, DMS_F32, views, kb, vb, NULL);
        be->attention_paged(be->ctx, f32, q, qpos, nq, views, H, KVH, hd, lc.bs, cases[c].window, scale);
        free_views(&lc, kb, vb);
        double e32 = 0;
        for (size_t i = 0; i < no; i++) e32 = fmax(e32, fabs(f32[i] - ref[i]));
        CHECK_MSG(e32 <= 1e-5, "%s: f32 cache differs from the reference by %.3g", cases[c].what, e32);
        for (int d = 0; d < 2; d++) {
            const dms_dtype t = HALVES[d];
            if (sg) memset(sg, 0, sizeof(float) * ns), memset(sr, 0, sizeof(double) * ns);
            reference(&lc, t, q, qpos, nq, H, cases[c].window, scale, ref, sr, bound);
            build_views(be, &lc, t, views, kb, vb, sg);
            be->attention_paged(be->ctx, got, q, qpos, nq, views, H, KVH, hd, lc.bs, cases[c].window, scale);
            free_views(&lc, kb, vb);
            char msg[256];
            CHECK_MSG(be->status(be->ctx, msg, sizeof msg) == 0, "%s", msg);
            double e_ref = 0, e_f32 = 0, worst = 0, e_sc = 0;
            int past = 0;
            for (size_t i = 0; i < no; i++) {
                const double d32 = fabs((double)got[i] - f32[i]), b = bound[i / hd];
                e_ref = fmax(e_ref, fabs(got[i] - ref[i]));
                e_f32 = fmax(e_f32, d32);
                worst = fmax(worst, d32 / b);
                past += d32 > b;
            }
            for (size_t i = 0; sg && i < ns; i++) e_sc = fmax(e_sc, fabs(sg[i] - sr[i]));
            printf("attention %s, %s cache: vs rounded reference %.2e; vs f32 cache %.2e (%.0f%% of the rounding "
                   "bound at most)%s\n",
                   cases[c].what, dms_dtype_name(t), e_ref, e_f32, 100 * worst, sg ? ", scores checked" : "");
            CHECK_MSG(e_ref <= 1e-5, "%s, %s: differs from the rounded reference by %.3g", cases[c].what,
                      dms_dtype_name(t), e_ref);
            CHECK_MSG(past == 0, "%s, %s: %d outputs past the rounding bound (worst %.2fx)", cases[c].what,
                      dms_dtype_name(t), past, worst);
            CHECK_MSG(e_sc <= 1e-5 * nq * G, "%s, %s: scores differ by %.3g", cases[c].what, dms_dtype_name(t), e_sc);
        }
        for (int h = 0; h < KVH; h++) {
            free(lc.k[h]);
            free(lc.v[h]);
            free(lc.pos[h]);
            free(lc.flag[h]);
        }
        free(q);
        free(got);
        free(f32);
        free(ref);
        free(bound);
        free(b32);
        free(sg);
        free(sr);
    }
}

/* ---- 3. the embedded model ---- */

/* logits[T, V] through the paged runtime (policy full unless pol), chunk tokens per call */
static int paged_logits(const dms_model *m, dms_policy pol, dms_dtype t, int bs, const int32_t *ids, int T, int chunk,
                        float *logits, dms_kv_stats *st, dms_err *err) {
    dms_kv_opts o;
    dms_kv_opts_default(&o);
    o.policy = pol;
    o.kv_dtype = t;
    o.block_size = bs;
    o.max_chunk = chunk;
    dms_kv_paged *kv = dms_kv_create(m, &o, err);
    if (!kv) return -1;
    const int s = dms_kv_admit(kv, err);
    int rc = s < 0 ? -1 : 0;
    for (int i = 0; rc == 0 && i < T; i += chunk) {
        const int n = T - i < chunk ? T - i : chunk;
        rc = dms_kv_prefill(kv, s, ids + i, n, logits + (size_t)i * m->cfg.vocab, 1, err);
    }
    if (rc == 0 && st) dms_kv_seq_stats(kv, s, st);
    dms_kv_free(kv);
    return rc;
}

/* The greedy continuation of the default-model fixture with a 16-bit
 * cache against the f32 cache's: equal, or leaving it only where the f32
 * cache's logits have a top-2 margin under max_margin. */
static void greedy(const dms_model *mp, const char *what, const dms_st_tensor *ids_t, const dms_st_tensor *gr_t,
                   double max_margin) {
    dms_err err = {0};
    const int V = mp->cfg.vocab;
    const int T = (int)ids_t->shape[0], G = (int)gr_t->shape[0];
    int32_t *outs[3] = {NULL, NULL, NULL};
    const dms_dtype dts[3] = {DMS_F32, DMS_F16, DMS_BF16};
    for (int d = 0; d < 3; d++) {
        dms_gen_params gp;
        dms_gen_params_default(&gp);
        gp.max_new_tokens = G;
        gp.stop_at_eos = 0;
        gp.kv.kv_dtype = dts[d];
        dms_gen_stats gs;
        const int rc = dms_generate(mp, (const int32_t *)ids_t->data, T, &gp, NULL, NULL, &outs[d], &gs, &err);
        CHECK_MSG(rc == 0 && outs[d], "%s", err.msg);
    }
    int32_t *seq = malloc(sizeof(int32_t) * (size_t)(T + G));
    float *lf = malloc(sizeof(float) * (size_t)(T + G) * V);
    for (int d = 1; d < 3 && outs[0]; d++) {
        int first = G;
        for (int i = 0; outs[d] && i < G; i++)
            if (outs[d][i] != outs[0][i]) {
                first = i;
                break;
            }
        if (first == G) {
            printf("greedy continuation (%d tokens), %s, %s cache: equal to the f32 cache's\n", G, what,
                   dms_dtype_name(dts[d]));
            continue;
        }
        /* where it leaves: the f32 cache's logits at that token, token by token */
        memcpy(seq, ids_t->data, sizeof(int32_t) * (size_t)T);
        memcpy(seq + T, outs[0], sizeof(int32_t) * (size_t)G);
        CHECK_MSG(paged_logits(mp, DMS_POLICY_FULL, DMS_F32, 0, seq, T + G, 1, lf, NULL, &err) == 0, "%s", err.msg);
        const double margin = top2_margin(lf + (size_t)(T - 1 + first) * V, V);
        printf("greedy continuation (%d tokens), %s, %s cache: equal to the f32 cache's for %d tokens; token %d is "
               "%d, not %d, where the f32 cache's top-2 margin is %.3f\n",
               G, what, dms_dtype_name(dts[d]), first, first, outs[d][first], outs[0][first], margin);
        CHECK_MSG(margin < max_margin, "%s, %s: greedy leaves the f32 cache's at token %d, margin %.3f", what,
                  dms_dtype_name(dts[d]), first, margin);
    }
    free(seq);
    free(lf);
    for (int d = 0; d < 3; d++) free(outs[d]);
}

static void test_model(void) {
    const char *path = getenv("DMS_DEFAULT_GGUF");
    if (!path || !*path) path = "models/default.gguf";
    dms_err err = {0};
    dms_backend be;
    CHECK_MSG(dms_backend_cpu_create(&be, &err) == 0, "%s", err.msg);
    dms_model m;
    int rc = dms_model_load(&m, path, &be, DMS_LOAD_WEIGHTS | DMS_LOAD_TOKENIZER | DMS_LOAD_KEEP_DTYPE, &err);
    CHECK_MSG(rc == 0, "%s (run scripts/install_deps.sh to install the embedded model)", err.msg);
    if (rc) {
        dms_backend_cpu_destroy(&be);
        return;
    }
    dms_safetensors ref;
    const int have_ref = dms_st_open_file(&ref, "tests/fixtures/default_model/reference.safetensors", &err) == 0;
    CHECK_MSG(have_ref, "%s", err.msg);
    const dms_st_tensor *ids_t = have_ref ? dms_st_find(&ref, "input_ids") : NULL;
    const dms_st_tensor *gr_t = have_ref ? dms_st_find(&ref, "greedy_ids") : NULL;
    CHECK(ids_t && gr_t);
    const int V = m.cfg.vocab;
    logit_cmp pre[2] = {{0}}, dec[2] = {{0}};
    for (int p = 0; p < CMP_N_PROMPTS && ids_t; p++) {
        size_t T = 0;
        int32_t *ids = cmp_prompt(p, ids_t, m.tok, &T, &err);
        CHECK_MSG(ids != NULL, "prompt %d: %s", p, err.msg);
        if (!ids) continue;
        float *want = malloc(sizeof(float) * T * V), *got = malloc(sizeof(float) * T * V);
        for (int chunk = 1; chunk >= 0; chunk--) { /* one call (widened weights), then token by token (int8 dots) */
            const int c = chunk ? (int)T : 1;
            CHECK_MSG(paged_logits(&m, DMS_POLICY_FULL, DMS_F32, 0, ids, (int)T, c, want, NULL, &err) == 0, "%s",
                      err.msg);
            for (int d = 0; d < 2; d++) {
                CHECK_MSG(paged_logits(&m, DMS_POLICY_FULL, HALVES[d], 0, ids, (int)T, c, got, NULL, &err) == 0, "%s",
                          err.msg);
                cmp_logits(chunk ? &pre[d] : &dec[d], got, want, (int)T, V);
            }
        }
        free(ids);
        free(want);
        free(got);
    }
    /* Prefill in one call multiplies by the widened weights in fp32, so the
     * difference is the cache's rounding alone: bounds from the
     * measurements in docs/runtime.md with margin (f16 rounds K and V to
     * 2^-11, bf16 to 2^-8). Token by token, the int8 activations of the
     * quantised weights turn any change of their input, this rounding
     * included, into a change of their own rounding: the difference is of
     * the size of the int8 error itself (kept vs fp32 weights,
     * tests/test_quant.c), and is bounded as that is. */
    for (int d = 0; d < 2; d++) {
        const int f16 = HALVES[d] == DMS_F16;
        const double rel[2] = {f16 ? 5e-3 : 3e-2, 0.1}, kl_mean[2] = {f16 ? 2e-5 : 5e-4, 2e-2};
        const logit_cmp *ks[2] = {&pre[d], &dec[d]};
        for (int k = 0; k < 2; k++) {
            const logit_cmp *c = ks[k];
            printf("model logits, %s cache vs f32 cache, %s: max abs diff %.3g (rel %.2e of max |logit| %.1f), KL "
                   "mean %.2e max %.2e nats, top-1 same at %ld of %ld\n",
                   dms_dtype_name(HALVES[d]), k ? "token by token (int8 activations)" : "prefill in one call",
                   c->max_abs, c->max_abs / c->max_logit, c->max_logit, c->kl_sum / c->positions, c->kl_max,
                   c->top1_same, c->positions);
            CHECK_MSG(c->max_abs <= rel[k] * c->max_logit, "%s: logits differ by %.3g", dms_dtype_name(HALVES[d]),
                      c->max_abs);
            CHECK_MSG(c->kl_sum / c->positions <= kl_mean[k] && c->kl_max <= 20 * kl_mean[k],
                      "%s: KL mean %.3g max %.3g", dms_dtype_name(HALVES[d]), c->kl_sum / c->positions, c->kl_max);
            CHECK_MSG(c->top1_same >= (k ? c->positions * 9 / 10 : c->positions), "%s: top-1 same at %ld of %ld",
                      dms_dtype_name(HALVES[d]), c->top1_same, c->positions);
        }
    }
    /* the greedy continuation of the fixture, 16-bit cache against f32
     * cache: as `dms generate` runs the model (weights kept), then on the
     * model dequantised to fp32 (no int8 activations) */
    if (ids_t && gr_t) greedy(&m, "weights kept", ids_t, gr_t, 1.0);
    dms_model_free(&m);
    rc = dms_model_load(&m, path, &be, DMS_LOAD_WEIGHTS | DMS_LOAD_TOKENIZER, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc == 0 && ids_t && gr_t) greedy(&m, "weights fp32", ids_t, gr_t, GREEDY_FP32_MARGIN);
    if (have_ref) dms_st_close(&ref);
    if (rc == 0) dms_model_free(&m);
    dms_backend_cpu_destroy(&be);
}

/* ---- 4. a DMS model under policy dms ---- */

static void test_dms_policy(void) {
    dms_err err = {0};
    dms_backend be;
    CHECK_MSG(dms_backend_cpu_create(&be, &err) == 0, "%s", err.msg);
    dms_model m;
    int rc = dms_model_load(&m, "tests/fixtures/models/tiny_qwen3", &be, DMS_LOAD_WEIGHTS, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) {
        dms_backend_cpu_destroy(&be);
        return;
    }
    dms_dms_config d;
    dms_dms_config_defaults(&d);
    d.separate_alpha = 1;
    d.window = 4;
    d.block_size = 3;
    CHECK_MSG(dms_model_init_heads(&m, &d, &err) == 0, "%s", err.msg);
    for (int l = 0; l < m.cfg.n_layers; l++) { /* z = 100 W_a . a - 5 > 0 for about a third of the tokens */
        float *w = m.layers[l].heads.w_a.data;
        for (int i = 0; i < m.cfg.n_kv_heads * m.cfg.hidden; i++) w[i] = frand(-0.03f, 0.03f);
    }
    enum { T = 48 };
    int32_t ids[T];
    for (int i = 0; i < T; i++) ids[i] = (int32_t)(urand() * m.cfg.vocab);
    const int V = m.cfg.vocab;
    float *want = malloc(sizeof(float) * T * V), *got = malloc(sizeof(float) * T * V);
    dms_kv_stats s32, s16;
    CHECK_MSG(paged_logits(&m, DMS_POLICY_DMS, DMS_F32, 3, ids, T, 1, want, &s32, &err) == 0, "%s", err.msg);
    for (int k = 0; k < 2; k++) {
        CHECK_MSG(paged_logits(&m, DMS_POLICY_DMS, HALVES[k], 3, ids, T, 1, got, &s16, &err) == 0, "%s", err.msg);
        const double e = dms_rel_err(got, want, (size_t)T * V);
        printf("dms policy, %s cache vs f32: logits rel err %.2e; held %.1f vs %.1f per lane (KV CR %.2f), %zu vs %zu "
               "bytes\n",
               dms_dtype_name(HALVES[k]), e, s16.held_mean, s32.held_mean, s16.kv_cr, s16.bytes_held, s32.bytes_held);
        CHECK_MSG(s32.kv_cr > 1.3, "the heads barely evict (KV CR %.2f)", s32.kv_cr);
        CHECK_MSG(s16.held_mean == s32.held_mean && s16.blocks_held == s32.blocks_held, "%s: other evictions",
                  dms_dtype_name(HALVES[k]));
        CHECK_MSG(2 * s16.bytes_held == s32.bytes_held, "%s: %zu bytes held, f32 %zu", dms_dtype_name(HALVES[k]),
                  s16.bytes_held, s32.bytes_held);
        CHECK_MSG(e <= 1e-2, "%s: logits rel err %.3g", dms_dtype_name(HALVES[k]), e);
    }
    /* a backend without the narrow op refuses a 16-bit cache */
    dms_backend plain = be;
    plain.narrow = NULL;
    const dms_backend *keep = m.be;
    m.be = &plain;
    dms_kv_opts o;
    dms_kv_opts_default(&o);
    o.kv_dtype = DMS_F16;
    dms_kv_paged *kv = dms_kv_create(&m, &o, &err);
    CHECK_MSG(!kv && strstr(err.msg, "fp32 only"), "no narrow op: %s", kv ? "accepted" : err.msg);
    dms_kv_free(kv);
    o.kv_dtype = DMS_Q4_0;
    m.be = keep;
    kv = dms_kv_create(&m, &o, &err);
    CHECK_MSG(!kv && strstr(err.msg, "only f32, f16 and bf16"), "Q4_0 cache: %s", kv ? "accepted" : err.msg);
    dms_kv_free(kv);
    CHECK(dms_kv_dtype_from_name("f16") == DMS_F16 && dms_kv_dtype_from_name("bf16") == DMS_BF16 &&
          dms_kv_dtype_from_name("f32") == DMS_F32 && dms_kv_dtype_from_name("q8") < 0);
    free(want);
    free(got);
    dms_model_free(&m);
    dms_backend_cpu_destroy(&be);
}

int main(void) {
    dms_err err = {0};
    dms_backend be;
    if (dms_backend_cpu_create(&be, &err) != 0) {
        CHECK_MSG(0, "%s", err.msg);
        return dms_check_finish();
    }
    test_narrow(&be);
    test_attention(&be);
    dms_backend_cpu_destroy(&be);
    test_dms_policy();
    test_model();
    return dms_check_finish();
}
