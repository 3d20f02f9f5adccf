/* attention_dms.c - DMS attention over packed training rows, forward and
 * backward: causal, per document, with the delayed-eviction log-keep bias
 * on keys past the window. fp32, OpenBLAS on score tiles, OpenMP over
 * (head, tile); every reduction has a fixed order so that results do not
 * depend on how threads are scheduled. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

/* Query rows per attention tile (score block ATT_TILE x T floats per
 * thread) and keys per tile of the backward's key-major pass. */
#define ATT_TILE 128
#define ATT_KTILE 64

/* Document bounds per token. seg is normally non-decreasing (packed
 * documents): then first[t] / end[t] are the first index and one past the
 * last index of t's document. Otherwise they fall back to 0 / T and the
 * per-element seg test does all the masking. */
static int doc_bounds(const int32_t *seg, int T, int **first, int **end) {
    *first = malloc(sizeof(int) * (size_t)T);
    *end = malloc(sizeof(int) * (size_t)T);
    if (!*first || !*end) {
        free(*first), free(*end);
        *first = *end = NULL;
        return -1;
    }
    int mono = 1;
    for (int t = 1; t < T; t++)
        if (seg[t] < seg[t - 1]) mono = 0;
    for (int t = 0; t < T; t++)
        (*first)[t] = (!mono || t == 0) ? 0 : (seg[t] == seg[t - 1] ? (*first)[t - 1] : t);
    for (int t = T - 1; t >= 0; t--)
        (*end)[t] = (!mono || t == T - 1) ? T : (seg[t] == seg[t + 1] ? (*end)[t + 1] : t + 1);
    return 0;
}

/* A pthreads OpenBLAS would start its own threads inside each of our OpenMP
 * threads (and the two pools then fight over the cores): make it sequential
 * while a parallel region calls sgemm, then restore its thread count. This
 * touches OpenBLAS's global setting, so ops must not run concurrently from
 * several host threads (they do not: the op table is driven by one thread). */
static int blas_serial_begin(void) {
    if (openblas_get_parallel() != 1) return 0; /* sequential or OpenMP build */
    int n = openblas_get_num_threads();
    if (n > 1) openblas_set_num_threads(1);
    return n;
}

static void blas_serial_end(int n) {
    if (n > 1) openblas_set_num_threads(n);
}

/* Scaled, masked, biased scores of query i against keys j0..j0+nc-1, in
 * place over the scaled dot products in row[nc]; masked entries -> -inf. */
static inline void dms_scores_row(float *row, int i, int j0, int nc, const float *log_keep,
                                  const int32_t *seg, int n_kv_heads, int kh, int window) {
    for (int c = 0; c < nc; c++) {
        const int j = j0 + c;
        if (j > i || seg[j] != seg[i]) {
            row[c] = -INFINITY;
        } else if (log_keep && i - j > window) {
            row[c] += log_keep[(size_t)j * n_kv_heads + kh];
        }
    }
}

/* Forward: one work item per (head, tile of ATT_TILE queries); the tile
 * sees keys from the start of its first query's document to its last
 * query, S = scale Q K^T in a per-thread buffer, softmax by rows, O = P V. */
void dms_cpu_attention_dms_fwd(void *ctx, float *out, float *lse, const float *q, const float *k,
                               const float *v, const float *log_keep, const int32_t *seg, int T,
                               int n_heads, int n_kv_heads, int head_dim, int window, float scale) {
    if (T <= 0) return;
    const int group = n_heads / n_kv_heads;
    const int qs = n_heads * head_dim, ks = n_kv_heads * head_dim;
    const int ntile = (T + ATT_TILE - 1) / ATT_TILE;
    int *first = NULL, *end = NULL, oom = doc_bounds(seg, T, &first, &end) != 0;
    const int blas = blas_serial_begin();
#pragma omp parallel if (!oom)
    {
        float *S = oom ? NULL : malloc(sizeof(float) * (size_t)ATT_TILE * (size_t)T);
        if (!S) {
#pragma omp atomic write
            oom = 1;
        }
#pragma omp for schedule(dynamic)
        for (int it = 0; it < n_heads * ntile; it++) {
            if (!S) continue;
            const int h = it % n_heads, kh = h / group;
            const int i0 = (ntile - 1 - it / n_heads) * ATT_TILE; /* longest tiles first */
            const int i1 = i0 + ATT_TILE < T ? i0 + ATT_TILE : T;
            const int nr = i1 - i0, j0 = first[i0], nc = i1 - j0;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nc, head_dim, scale,
                        q + (size_t)i0 * qs + (size_t)h * head_dim, qs,
                        k + (size_t)j0 * ks + (size_t)kh * head_dim, ks, 0.0f, S, nc);
            for (int r = 0; r < nr; r++) {
                const int i = i0 + r;
                float *row = S + (size_t)r * nc;
                dms_scores_row(row, i, j0, nc, log_keep, seg, n_kv_heads, kh, window);
                float mx = -INFINITY;
                for (int c = 0; c < nc; c++) mx = row[c] > mx ? row[c] : mx;
                if (mx == -INFINITY) { /* nothing visible (log_keep = -inf): zero output */
                    lse[(size_t)i * n_heads + h] = -INFINITY;
                    memset(row, 0, sizeof(float) * (size_t)nc);
                    continue;
                }
                float sum = 0.0f;
                for (int c = 0; c < nc; c++) {
                    row[c] = expf(row[c] - mx);
                    sum += row[c];
                }
                lse[(size_t)i * n_heads + h] = mx + logf(sum);
                const float inv = 1.0f / sum;
                for (int c = 0; c < nc; c++) row[c] *= inv;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, head_dim, nc, 1.0f, S, nc,
                        v + (size_t)j0 * ks + (size_t)kh * head_dim, ks, 0.0f,
                        out + (size_t)i0 * qs + (size_t)h * head_dim, qs);
        }
        free(S);
    }
    blas_serial_end(blas);
    if (oom) {
        dms_cpu_fail(ctx, "attention_dms_fwd", "out of memory");
        dms_cpu_fill_nan(out, (size_t)T * qs);
        dms_cpu_fill_nan(lse, (size_t)T * n_heads);
    }
    free(first);
    free(end);
}

/* Backward in two race-free passes (no atomics, fixed summation order):
 *  A. per (head, query tile): recompute P, dS = P (dO V^T - D); dq = scale dS K.
 *  B. per (kv head, tile of ATT_KTILE keys), over the queries of the keys'
 *     documents and the heads of the group: the same P^T, dS^T blocks;
 *     dk = scale dS^T Q, dv = P^T dO, dlog_keep = row sums of dS^T over the
 *     biased entries. Each item owns its rows of dq / dk, dv, dlog_keep. */
void dms_cpu_attention_dms_bwd(void *ctx, float *dq, float *dk, float *dv, float *dlog_keep,
                               const float *dout, const float *out, const float *lse, const float *q,
                               const float *k, const float *v, const float *log_keep,
                               const int32_t *seg, int T, int n_heads, int n_kv_heads, int head_dim,
                               int window, float scale) {
    if (T <= 0) return;
    const int group = n_heads / n_kv_heads;
    const int qs = n_heads * head_dim, ks = n_kv_heads * head_dim;
    const int ntile = (T + ATT_TILE - 1) / ATT_TILE, nktile = (T + ATT_KTILE - 1) / ATT_KTILE;
    memset(dk, 0, sizeof(float) * (size_t)T * ks);
    memset(dv, 0, sizeof(float) * (size_t)T * ks);
    int *first = NULL, *end = NULL, oom = doc_bounds(seg, T, &first, &end) != 0;
    float *D = oom ? NULL : malloc(sizeof(float) * (size_t)T * n_heads); /* D[i,h] = dO_i . O_i */
    if (!D) oom = 1;
    const int blas = blas_serial_begin();
#pragma omp parallel if (!oom)
    {
        float *P = oom ? NULL : malloc(sizeof(float) * (size_t)ATT_TILE * (size_t)T);
        float *dS = oom ? NULL : malloc(sizeof(float) * (size_t)ATT_TILE * (size_t)T);
        const int ok = P && dS;
        if (!ok) {
#pragma omp atomic write
            oom = 1;
        }
        if (D) {
#pragma omp for schedule(static)
            for (int i = 0; i < T; i++)
                for (int h = 0; h < n_heads; h++) {
                    const float *oi = out + (size_t)i * qs + (size_t)h * head_dim;
                    const float *di = dout + (size_t)i * qs + (size_t)h * head_dim;
                    float s = 0.0f;
                    for (int d = 0; d < head_dim; d++) s += di[d] * oi[d];
                    D[(size_t)i * n_heads + h] = s;
                }
        }
        /* ---- pass A: dq ---- */
#pragma omp for schedule(dynamic)
        for (int it = 0; it < n_heads * ntile; it++) {
            if (!ok) continue;
            const int h = it % n_heads, kh = h / group;
            const int i0 = (ntile - 1 - it / n_heads) * ATT_TILE;
            const int i1 = i0 + ATT_TILE < T ? i0 + ATT_TILE : T;
            const int nr = i1 - i0, j0 = first[i0], nc = i1 - j0;
            const float *kt = k + (size_t)j0 * ks + (size_t)kh * head_dim;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nc, head_dim, scale,
                        q + (size_t)i0 * qs + (size_t)h * head_dim, qs, kt, ks, 0.0f, P, nc);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nc, head_dim, 1.0f,
                        dout + (size_t)i0 * qs + (size_t)h * head_dim, qs,
                        v + (size_t)j0 * ks + (size_t)kh * head_dim, ks, 0.0f, dS, nc);
            for (int r = 0; r < nr; r++) {
                const int i = i0 + r;
                float *prow = P + (size_t)r * nc, *drow = dS + (size_t)r * nc;
                const float li = lse[(size_t)i * n_heads + h], Di = D[(size_t)i * n_heads + h];
                dms_scores_row(prow, i, j0, nc, log_keep, seg, n_kv_heads, kh, window);
                for (int c = 0; c < nc; c++) {
                    const float p = (li == -INFINITY || prow[c] == -INFINITY) ? 0.0f : expf(prow[c] - li);
                    drow[c] = p * (drow[c] - Di);
                }
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, head_dim, nc, scale, dS, nc, kt,
                        ks, 0.0f, dq + (size_t)i0 * qs + (size_t)h * head_dim, qs);
        }
        /* ---- pass B: dk, dv, dlog_keep ---- */
#pragma omp for schedule(dynamic)
        for (int it = 0; it < n_kv_heads * nktile; it++) {
            if (!ok) continue;
            const int kh = it % n_kv_heads;
            const int j0 = (it / n_kv_heads) * ATT_KTILE; /* earliest keys (most queries) first */
            const int j1 = j0 + ATT_KTILE < T ? j0 + ATT_KTILE : T;
            const int nk = j1 - j0, iend = end[j1 - 1];
            const float *kt = k + (size_t)j0 * ks + (size_t)kh * head_dim;
            const float *vt = v + (size_t)j0 * ks + (size_t)kh * head_dim;
            float *dkt = dk + (size_t)j0 * ks + (size_t)kh * head_dim;
            float *dvt = dv + (size_t)j0 * ks + (size_t)kh * head_dim;
            float acc[ATT_KTILE] = {0}; /* dlog_keep of the tile's keys */
            float lkt[ATT_KTILE];
            for (int c = 0; c < nk; c++)
                lkt[c] = log_keep ? log_keep[(size_t)(j0 + c) * n_kv_heads + kh] : 0.0f;
            for (int i0 = j0; i0 < iend; i0 += ATT_TILE) {
                const int nr = iend - i0 < ATT_TILE ? iend - i0 : ATT_TILE;
                for (int h = kh * group; h < (kh + 1) * group; h++) {
                    const float *qt = q + (size_t)i0 * qs + (size_t)h * head_dim;
                    const float *dot = dout + (size_t)i0 * qs + (size_t)h * head_dim;
                    /* P^T = scale K Q^T [nk, nr]; dS^T = V dO^T */
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nk, nr, head_dim, scale, kt, ks,
                                qt, qs, 0.0f, P, nr);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nk, nr, head_dim, 1.0f, vt, ks,
                                dot, qs, 0.0f, dS, nr);
                    float li[ATT_TILE], Di[ATT_TILE];
                    for (int r = 0; r < nr; r++) {
                        li[r] = lse[(size_t)(i0 + r) * n_heads + h];
                        Di[r] = D[(size_t)(i0 + r) * n_heads + h];
                    }
                    for (int c = 0; c < nk; c++) {
                        const int j = j0 + c;
                        float *prow = P + (size_t)c * nr, *drow = dS + (size_t)c * nr;
                        float a = 0.0f;
                        for (int r = 0; r < nr; r++) {
                            const int i = i0 + r;
                            float p = 0.0f;
                            if (j <= i && seg[j] == seg[i] && li[r] != -INFINITY) {
                                const int b = i - j > window;
                                const float s = prow[r] + (b ? lkt[c] : 0.0f);
                                if (s != -INFINITY) p = expf(s - li[r]);
                                const float ds = p * (drow[r] - Di[r]);
                                if (b) a += ds;
                                drow[r] = ds;
                            } else {
                                drow[r] = 0.0f;
                            }
                            prow[r] = p;
                        }
                        acc[c] += a;
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nk, head_dim, nr, scale, dS, nr,
                                qt, qs, 1.0f, dkt, ks);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nk, head_dim, nr, 1.0f, P, nr,
                                dot, qs, 1.0f, dvt, ks);
                }
            }
            if (dlog_keep)
                for (int c = 0; c < nk; c++) dlog_keep[(size_t)(j0 + c) * n_kv_heads + kh] = acc[c];
        }
        free(P);
        free(dS);
    }
    blas_serial_end(blas);
    if (oom) {
        dms_cpu_fail(ctx, "attention_dms_bwd", "out of memory");
        dms_cpu_fill_nan(dq, (size_t)T * qs);
        dms_cpu_fill_nan(dk, (size_t)T * ks);
        dms_cpu_fill_nan(dv, (size_t)T * ks);
        dms_cpu_fill_nan(dlog_keep, (size_t)T * n_kv_heads);
    }
    free(D);
    free(first);
    free(end);
}

/* Attention guidance (an optional training extension): per (kv head, tile
 * of ATT_KTILE keys), the scores of the tile's keys against every query of
 * their documents, for each head of the group; the largest probability
 * exp(s - lse) among queries more than `window` after the key (or, with
 * mean, the mean over those (query, head) pairs, summed in a fixed order),
 * times the l1 norm of the key's value when v is given. Each item owns its
 * keys' entries, so the result does not depend on scheduling. */
void dms_cpu_attention_future_max(void *ctx, float *imp, const float *q, const float *k, const float *v,
                                  const float *lse, const int32_t *seg, int T, int n_heads, int n_kv_heads,
                                  int head_dim, int window, float scale, int mean) {
    if (T <= 0) return;
    const int group = n_heads / n_kv_heads;
    const int qs = n_heads * head_dim, ks = n_kv_heads * head_dim;
    const int nktile = (T + ATT_KTILE - 1) / ATT_KTILE;
    int *first = NULL, *end = NULL, oom = doc_bounds(seg, T, &first, &end) != 0;
    const int blas = blas_serial_begin();
#pragma omp parallel if (!oom)
    {
        float *P = oom ? NULL : malloc(sizeof(float) * (size_t)ATT_KTILE * (size_t)ATT_TILE);
        if (!P) {
#pragma omp atomic write
            oom = 1;
        }
#pragma omp for schedule(dynamic)
        for (int it = 0; it < n_kv_heads * nktile; it++) {
            if (!P) continue;
            const int kh = it % n_kv_heads;
            const int j0 = (it / n_kv_heads) * ATT_KTILE;
            const int j1 = j0 + ATT_KTILE < T ? j0 + ATT_KTILE : T;
            const int nk = j1 - j0, iend = end[j1 - 1];
            const float *kt = k + (size_t)j0 * ks + (size_t)kh * head_dim;
            float mx[ATT_KTILE] = {0};
            double sum[ATT_KTILE] = {0};
            int cnt[ATT_KTILE] = {0};
            for (int i0 = j0 + window + 1; i0 < iend; i0 += ATT_TILE) {
                const int nr = iend - i0 < ATT_TILE ? iend - i0 : ATT_TILE;
                for (int h = kh * group; h < (kh + 1) * group; h++) {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nk, nr, head_dim, scale, kt, ks,
                                q + (size_t)i0 * qs + (size_t)h * head_dim, qs, 0.0f, P, nr);
                    for (int c = 0; c < nk; c++) {
                        const int j = j0 + c;
                        const float *prow = P + (size_t)c * nr;
                        for (int r = 0; r < nr; r++) {
                            const int i = i0 + r;
                            const float li = lse[(size_t)i * n_heads + h];
                            if (i - j <= window || seg[j] != seg[i] || li == -INFINITY) continue;
                            const float p = expf(prow[r] - li);
                            if (p > mx[c]) mx[c] = p;
                            sum[c] += p;
                            cnt[c]++;
                        }
                    }
                }
            }
            for (int c = 0; c < nk; c++) {
                float w = 1.0f;
                if (v) {
                    const float *vj = v + (size_t)(j0 + c) * ks + (size_t)kh * head_dim;
                    w = 0.0f;
                    for (int d = 0; d < head_dim; d++) w += fabsf(vj[d]);
                }
                const float s = mean ? (cnt[c] ? (float)(sum[c] / cnt[c]) : 0.0f) : mx[c];
                imp[(size_t)(j0 + c) * n_kv_heads + kh] = s * w;
            }
        }
        free(P);
    }
    blas_serial_end(blas);
    if (oom) {
        dms_cpu_fail(ctx, "attention_future_max", "out of memory");
        dms_cpu_fill_nan(imp, (size_t)T * n_kv_heads);
    }
    free(first);
    free(end);
}
