/* attention_paged.c - attention of a sequence's new queries against its
 * paged, ragged per-KV-head caches (runtime/kv_paged.c), with the DMS
 * visibility rule, and the per-key probability sums that TOVA and H2O
 * evict by. K and V rows are fp32, fp16 or bf16 (the lane's dtype): 16-bit
 * rows are widened a chunk at a time by the instruction set's kernels
 * (quant.h, chosen from CPUID), and every sum is fp32.
 *
 * Work items: (tile of up to QTILE queries, KV head, segment of SEG_KEYS
 * keys). An item reads each key and value of its segment once for all the
 * query heads of the group and all the queries of the tile, keeping a
 * running max, sum and output per row (online softmax); a row's segments
 * are merged afterwards in segment order. Segments are fixed key ranges,
 * so one decode step at long context spreads over every thread while the
 * result stays independent of the thread count. With scores wanted (TOVA,
 * H2O) a lane is one segment, and the probabilities are added per KV head
 * in a fixed order afterwards. A chunk of keys is transposed once, so
 * each row's 64 scores are 64 independent sums (no horizontal adds); the
 * scores and the value sums run with AVX2 + FMA where the backend's
 * instruction set has them (cpu_isa.c), else in plain C. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/quant.h"

/* Without it gcc keeps exp_le0's clamps as branches (they could raise FP
 * exceptions, which nothing here reads) and leaves its loop scalar. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#define QTILE 16     /* queries per work item */
#define CHUNK 64     /* keys scored at once */
#define SEG_KEYS 512 /* keys per segment (a multiple of CHUNK) */

/* exp(x) for x <= 0 (a score minus a running max): 0 below -87 (-inf
 * included), NaN kept. Cephes' expf reduction and polynomial (relative
 * error about 1e-7) in plain C without branches or calls, which the
 * compiler vectorises. */
static inline float exp_le0(float x) {
    float xc = x > -87.0f ? x : -87.0f;
    xc = xc < 88.0f ? xc : 88.0f;
    const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* nearest integer, branch-free */
    const float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) * (1 << 23); /* 2^n, n in [-126, 127] */
    float s;
    memcpy(&s, &bits, sizeof s);
    return x < -87.0f ? 0.0f : x != x ? x : y * s;
}

/* s[0..CHUNK) = q . keys, the keys transposed: kt[c * CHUNK + j] is
 * element c of key j (summed over c in order). */
static void scores(const float *q, const float *kt, int hd, float *s) {
    for (int j = 0; j < CHUNK; j++) s[j] = 0.0f;
    for (int c = 0; c < hd; c++) {
        const float qc = q[c], *kc = kt + (size_t)c * CHUNK;
        for (int j = 0; j < CHUNK; j++) s[j] += qc * kc[j];
    }
}

/* o[hd] += sum_j p[j] v[j][.] (portable). */
static void accumulate(float *o, const float *p, const float *const *v, int nk, int hd) {
    for (int j = 0; j < nk; j++) {
        const float pj = p[j], *vj = v[j];
        if (pj == 0.0f) continue;
        for (int c = 0; c < hd; c++) o[c] += pj * vj[c];
    }
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
/* The same with AVX2 + FMA: 32 columns at a time held in four registers
 * across all the keys, instead of a load and a store of o per key. */
__attribute__((target("avx2,fma"))) static void accumulate_avx2(float *o, const float *p, const float *const *v, int nk,
                                                                int hd) {
    int c0 = 0;
    for (; c0 + 32 <= hd; c0 += 32) {
        __m256 a0 = _mm256_loadu_ps(o + c0), a1 = _mm256_loadu_ps(o + c0 + 8);
        __m256 a2 = _mm256_loadu_ps(o + c0 + 16), a3 = _mm256_loadu_ps(o + c0 + 24);
        for (int j = 0; j < nk; j++) {
            const __m256 pj = _mm256_set1_ps(p[j]);
            const float *vj = v[j] + c0;
            a0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj), a0);
            a1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8), a1);
            a2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 16), a2);
            a3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 24), a3);
        }
        _mm256_storeu_ps(o + c0, a0);
        _mm256_storeu_ps(o + c0 + 8, a1);
        _mm256_storeu_ps(o + c0 + 16, a2);
        _mm256_storeu_ps(o + c0 + 24, a3);
    }
    for (int j = 0; j < nk && c0 < hd; j++)
        for (int c = c0; c < hd; c++) o[c] += p[j] * v[j][c];
}
/* scores() with the 64 sums in eight registers. */
__attribute__((target("avx2,fma"))) static void scores_avx2(const float *q, const float *kt, int hd, float *s) {
    __m256 a[CHUNK / 8];
    for (int k = 0; k < CHUNK / 8; k++) a[k] = _mm256_setzero_ps();
    for (int c = 0; c < hd; c++) {
        const __m256 qc = _mm256_set1_ps(q[c]);
        const float *kc = kt + (size_t)c * CHUNK;
        for (int k = 0; k < CHUNK / 8; k++) a[k] = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kc + 8 * k), a[k]);
    }
    for (int k = 0; k < CHUNK / 8; k++) _mm256_storeu_ps(s + 8 * k, a[k]);
}
#define HAVE_ACCUMULATE_AVX2 1
#endif

static inline int visible(const dms_kv_lane_view *ln, int s, int qp, int window) {
    const int p = ln->pos[s];
    return p <= qp && (qp - p <= window || !ln->flag || !ln->flag[s]);
}

/* Pointers to the fp32 rows of keys (or values) s0 .. s0+nk-1 of a lane:
 * into the blocks themselves (fp32), or into buf after widening. */
static void lane_rows(const dms_cpu_kernels *kern, const dms_kv_lane_view *ln, const void *const *blk, int s0, int nk,
                      int hd, int bs, float *buf, const float **row) {
    if (ln->dtype == DMS_F32) {
        for (int j = 0; j < nk; j++)
            row[j] = (const float *)blk[(s0 + j) / bs] + (size_t)((s0 + j) % bs) * hd;
        return;
    }
    const dms_cpu_widen_fn widen = kern->widen[ln->dtype];
    const size_t row_bytes = dms_dtype_bytes(ln->dtype, (size_t)hd);
    for (int j = 0; j < nk;) {
        const int s = s0 + j, r = s % bs, run = bs - r < nk - j ? bs - r : nk - j;
        widen((const char *)blk[s / bs] + (size_t)r * row_bytes, buf + (size_t)j * hd, run * hd);
        for (int k = 0; k < run; k++) row[j + k] = buf + (size_t)(j + k) * hd;
        j += run;
    }
}

/* The shape of one call. */
typedef struct {
    const dms_cpu_kernels *kern;
    const float *q;
    const int32_t *q_pos;
    const dms_kv_lane_view *lanes;
    int n_q, H, G, hd, bs, window, rmax;
    float scale;
    float *probs; /* [n_q, H, max_n]: raw scores, then probabilities (NULL: none wanted) */
    int max_n;
} paged_call;

/* Per-thread scratch. */
typedef struct {
    float *sc, *rmx, *kbuf, *vbuf, *kt;
    const float **krow, **vrow;
    uint8_t *vis;
} scratch;

/* One item: queries [i0, i0 + nq) of the tile, KV head kh, keys [s0, s1).
 * part: per row r (query i0 + r / G, head kh * G + r % G) its running max,
 * sum and unnormalised output, [m, l, o[hd]]. */
static void run_item(const paged_call *pc, scratch *w, int i0, int nq, int kh, int s0, int s1, float *part) {
    const dms_kv_lane_view *ln = &pc->lanes[kh];
    const int G = pc->G, hd = pc->hd, R = nq * G, stride = hd + 2, avx2 = pc->kern->isa >= DMS_CPU_ISA_AVX2;
    (void)avx2; /* unused where the AVX2 kernels are not built */
    for (int r = 0; r < R; r++) {
        float *p = part + (size_t)r * stride;
        p[0] = -INFINITY;
        p[1] = 0.0f;
        memset(p + 2, 0, sizeof(float) * (size_t)hd);
    }
    for (int c0 = s0; c0 < s1; c0 += CHUNK) {
        const int nk = s1 - c0 < CHUNK ? s1 - c0 : CHUNK;
        lane_rows(pc->kern, ln, ln->k_blk, c0, nk, hd, pc->bs, w->kbuf, w->krow);
        for (int j = 0; j < CHUNK; j++) /* transposed, zeros past the last key */
            for (int c = 0; c < hd; c++) w->kt[(size_t)c * CHUNK + j] = j < nk ? w->krow[j][c] : 0.0f;
        int any = 0;
        for (int qi = 0; qi < nq; qi++) {
            const int i = i0 + qi;
            int seen = 0;
            for (int j = 0; j < nk; j++) seen += w->vis[j] = (uint8_t)visible(ln, c0 + j, pc->q_pos[i], pc->window);
            for (int g = 0; g < G; g++) {
                const int r = qi * G + g, h = kh * G + g;
                const float *qr = pc->q + ((size_t)i * pc->H + h) * hd;
                float *sr = w->sc + (size_t)r * CHUNK, mx = -INFINITY;
#ifdef HAVE_ACCUMULATE_AVX2
                if (avx2) scores_avx2(qr, w->kt, hd, sr);
                else
#endif
                    scores(qr, w->kt, hd, sr);
                for (int j = 0; j < nk; j++) {
                    sr[j] = w->vis[j] ? sr[j] * pc->scale : -INFINITY;
                    mx = sr[j] > mx ? sr[j] : mx;
                }
                if (pc->probs) memcpy(pc->probs + ((size_t)i * pc->H + h) * pc->max_n + c0, sr, sizeof(float) * (size_t)nk);
                w->rmx[r] = seen ? mx : -INFINITY;
            }
            any |= seen;
        }
        if (!any) continue;
        lane_rows(pc->kern, ln, ln->v_blk, c0, nk, hd, pc->bs, w->vbuf, w->vrow);
        for (int r = 0; r < R; r++) {
            if (w->rmx[r] == -INFINITY) continue; /* nothing of this chunk visible to the row */
            float *p = part + (size_t)r * stride, *o = p + 2, *sr = w->sc + (size_t)r * CHUNK;
            const float mn = w->rmx[r] > p[0] ? w->rmx[r] : p[0];
            if (mn != p[0]) { /* a new max: rescale what the row holds */
                const float corr = exp_le0(p[0] - mn);
                p[1] *= corr;
                for (int c = 0; c < hd; c++) o[c] *= corr;
                p[0] = mn;
            }
            for (int j = 0; j < nk; j++) sr[j] = exp_le0(sr[j] - mn); /* vectorised */
            float part8[8] = {0};
            int j8 = 0;
            for (; j8 + 8 <= nk; j8 += 8)
                for (int u = 0; u < 8; u++) part8[u] += sr[j8 + u];
            float sum = ((part8[0] + part8[4]) + (part8[1] + part8[5])) + ((part8[2] + part8[6]) + (part8[3] + part8[7]));
            for (; j8 < nk; j8++) sum += sr[j8];
            p[1] += sum;
#ifdef HAVE_ACCUMULATE_AVX2
            if (avx2) accumulate_avx2(o, sr, w->vrow, nk, hd);
            else
#endif
                accumulate(o, sr, w->vrow, nk, hd);
        }
    }
}

void dms_cpu_attention_paged(void *ctx, float *out, const float *q, const int32_t *q_pos, int n_q,
                             const dms_kv_lane_view *lanes, int n_heads, int n_kv_heads, int head_dim, int block_size,
                             int window, float scale) {
    if (n_q <= 0 || n_heads <= 0 || head_dim <= 0) return;
    if (n_kv_heads <= 0 || n_heads % n_kv_heads || block_size <= 0) {
        dms_cpu_fail(ctx, "attention_paged", "bad head counts or block size");
        dms_cpu_fill_nan(out, (size_t)n_q * n_heads * head_dim);
        return;
    }
    dms_cpu_kernels here;
    const dms_cpu_kernels *kern = dms_cpu_ctx_kernels(ctx);
    if (!kern) {
        dms_cpu_kernels_init(&here, dms_cpu_isa_best());
        kern = &here;
    }
    const int KV = n_kv_heads, G = n_heads / KV, hd = head_dim;
    int max_n = 1, bad = 0;
    for (int h = 0; h < KV; h++) {
        max_n = lanes[h].n > max_n ? lanes[h].n : max_n;
        const dms_dtype t = lanes[h].dtype;
        bad |= t != DMS_F32 && (t != DMS_F16 && t != DMS_BF16 ? 1 : !kern->widen[t]);
    }
    if (bad) {
        dms_cpu_fail(ctx, "attention_paged", "KV cache rows must be f32, f16 or bf16");
        dms_cpu_fill_nan(out, (size_t)n_q * n_heads * hd);
        return;
    }
    const int want_scores = lanes[0].score != NULL;
    const int tiles = (n_q + QTILE - 1) / QTILE, rmax = (n_q < QTILE ? n_q : QTILE) * G, stride = hd + 2;
    int nseg[64], *segs = KV <= 64 ? nseg : malloc(sizeof(int) * (size_t)KV), per_tile = 0;
    for (int h = 0; segs && h < KV; h++) {
        const int n = lanes[h].n > 0 ? lanes[h].n : 0;
        segs[h] = want_scores || n <= SEG_KEYS ? 1 : (n + SEG_KEYS - 1) / SEG_KEYS;
        per_tile += segs[h];
    }
    const size_t items = (size_t)tiles * per_tile;
    paged_call pc = {kern, q, q_pos, lanes, n_q, n_heads, G, hd, block_size, window, rmax, scale, NULL, max_n};
    pc.probs = want_scores ? malloc(sizeof(float) * (size_t)n_q * n_heads * max_n) : NULL;
    float *part = segs ? malloc(sizeof(float) * items * (size_t)rmax * stride) : NULL;
    int oom = !segs || !part || (want_scores && !pc.probs);
#pragma omp parallel if (!oom)
    {
        scratch w;
        w.sc = malloc(sizeof(float) * (size_t)rmax * CHUNK);
        w.rmx = malloc(sizeof(float) * (size_t)rmax);
        w.kbuf = malloc(sizeof(float) * (size_t)CHUNK * hd);
        w.vbuf = malloc(sizeof(float) * (size_t)CHUNK * hd);
        w.kt = malloc(sizeof(float) * (size_t)CHUNK * hd);
        w.krow = malloc(sizeof(float *) * CHUNK);
        w.vrow = malloc(sizeof(float *) * CHUNK);
        w.vis = malloc(CHUNK);
        const int ok = !oom && w.sc && w.rmx && w.kbuf && w.vbuf && w.kt && w.krow && w.vrow && w.vis;
        if (!ok) {
#pragma omp atomic write
            oom = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (size_t it = 0; it < items; it++) {
            if (!ok) continue;
            const int t = (int)(it / (size_t)per_tile);
            int rem = (int)(it % (size_t)per_tile), kh = 0;
            while (rem >= segs[kh]) rem -= segs[kh++];
            const int n = lanes[kh].n > 0 ? lanes[kh].n : 0;
            const int s0 = want_scores ? 0 : rem * SEG_KEYS, s1 = want_scores || s0 + SEG_KEYS > n ? n : s0 + SEG_KEYS;
            const int i0 = t * QTILE, nq = n_q - i0 < QTILE ? n_q - i0 : QTILE;
            run_item(&pc, &w, i0, nq, kh, s0, s1, part + it * (size_t)rmax * stride);
        }
        free(w.sc);
        free(w.rmx);
        free(w.kbuf);
        free(w.vbuf);
        free(w.kt);
        free(w.krow);
        free(w.vrow);
        free(w.vis);
    }
    if (oom) {
        dms_cpu_fail(ctx, "attention_paged", "out of memory");
        dms_cpu_fill_nan(out, (size_t)n_q * n_heads * hd);
        if (segs != nseg) free(segs);
        free(part);
        free(pc.probs);
        return;
    }
    /* merge each row's segments in order; with scores, normalise them */
#pragma omp parallel for schedule(static) if (tiles * KV >= 8) /* not for a decode step: one barrier less */
    for (int tk = 0; tk < tiles * KV; tk++) {
        const int t = tk / KV, kh = tk % KV, i0 = t * QTILE, nq = n_q - i0 < QTILE ? n_q - i0 : QTILE;
        int first = 0;
        for (int h = 0; h < kh; h++) first += segs[h];
        const float *p0 = part + ((size_t)t * per_tile + first) * (size_t)rmax * stride;
        for (int r = 0; r < nq * G; r++) {
            const int i = i0 + r / G, h = kh * G + r % G;
            float *o = out + ((size_t)i * n_heads + h) * hd, mx = -INFINITY, l = 0.0f;
            for (int g = 0; g < segs[kh]; g++) {
                const float m = p0[((size_t)g * rmax + r) * stride];
                mx = m > mx ? m : mx;
            }
            float *pr = pc.probs ? pc.probs + ((size_t)i * n_heads + h) * max_n : NULL;
            memset(o, 0, sizeof(float) * (size_t)hd);
            if (mx == -INFINITY) { /* no key visible: zeros */
                if (pr) memset(pr, 0, sizeof(float) * (size_t)(lanes[kh].n > 0 ? lanes[kh].n : 0));
                continue;
            }
            for (int g = 0; g < segs[kh]; g++) {
                const float *p = p0 + ((size_t)g * rmax + r) * stride;
                if (p[0] == -INFINITY) continue;
                const float f = exp_le0(p[0] - mx);
                l += p[1] * f;
                for (int c = 0; c < hd; c++) o[c] += p[2 + c] * f;
            }
            const float inv = l > 0.0f ? 1.0f / l : 0.0f;
            for (int c = 0; c < hd; c++) o[c] *= inv;
            for (int s = 0; pr && s < lanes[kh].n; s++) pr[s] = exp_le0(pr[s] - mx) * inv;
        }
    }
    for (int kh = 0; pc.probs && kh < KV; kh++) {
        const dms_kv_lane_view *ln = &lanes[kh];
        for (int i = 0; i < n_q; i++)
            for (int h = kh * G; h < (kh + 1) * G; h++) {
                const float *pr = pc.probs + ((size_t)i * n_heads + h) * max_n;
                for (int s = 0; s < ln->n; s++) ln->score[s] += pr[s];
            }
    }
    if (segs != nseg) free(segs);
    free(part);
    free(pc.probs);
}
