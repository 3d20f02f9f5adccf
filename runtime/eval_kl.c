/* eval_kl.c - teacher-forced comparison of a KV policy with vanilla
 * attention (eval.h): the same windows of text go through a vanilla run
 * (the reference model, or the same model under policy full) and the
 * policy's run, and at every position the full-vocabulary distributions
 * are compared in double precision: KL(vanilla || policy) and the
 * next-token NLL of both. Alongside, the live tokens of the policy's cache
 * after every forward call give the time-averaged memory that the budget
 * matching of `dms eval --match` needs. */
#include "runtime/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/progress.h"

static double log_sum_exp(const float *x, int V) {
    float mx = x[0];
    for (int i = 1; i < V; i++)
        if (x[i] > mx) mx = x[i];
    double s = 0;
    for (int i = 0; i < V; i++) s += exp((double)x[i] - mx);
    return mx + log(s);
}

double dms_eval_kl_row(const float *p, const float *q, int V, int target, double *nll_p, double *nll_q) {
    const double lp = log_sum_exp(p, V), lq = log_sum_exp(q, V);
    double kl = 0;
    for (int i = 0; i < V; i++) {
        const double a = (double)p[i] - lp, b = (double)q[i] - lq;
        kl += exp(a) * (a - b);
    }
    if (nll_p) *nll_p = target >= 0 ? lp - p[target] : 0;
    if (nll_q) *nll_q = target >= 0 ? lq - q[target] : 0;
    return kl;
}

/* Per window: the running sums and the last sample of the live tokens. */
typedef struct win {
    dms_eval_kl_window w;
    const int32_t *ids;
    int ref_seq, pol_seq;
    int last_p;      /* position of the last live-token sample */
    double last_h;   /* live tokens summed over lanes there */
    double *lane_sum; /* [lanes] the same sums per lane */
    int *lane_last;  /* [lanes] live tokens of each lane at the last sample */
    double t0;
} win;

/* Live tokens of every lane after position p; positions since the last
 * sample are filled in linearly (exact when they are one apart). */
static void sample_held(win *s, int p, const dms_kv_paged *kv, const dms_model *m) {
    const int c = p - s->last_p;
    double h = 0;
    for (int l = 0, i = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < m->cfg.n_kv_heads; k++, i++) {
            const int now = dms_kv_lane_len(kv, s->pol_seq, l, k);
            s->lane_sum[i] += c * (double)s->lane_last[i] + (now - s->lane_last[i]) * (c + 1) / 2.0;
            s->lane_last[i] = now;
            h += now;
        }
    s->w.held_sum += c * s->last_h + (h - s->last_h) * (c + 1) / 2.0;
    s->last_p = p;
    s->last_h = h;
}

static void compare(win *s, const float *ref_row, const float *pol_row, int V, int p, int T) {
    double nll_ref, nll_pol;
    const int target = p + 1 < T ? s->ids[p + 1] : -1;
    const double kl = dms_eval_kl_row(ref_row, pol_row, V, target, &nll_ref, &nll_pol);
    s->w.kl_sum += kl;
    if (kl > s->w.kl_max) s->w.kl_max = kl;
    if (target >= 0) {
        s->w.nll_sum += nll_pol;
        s->w.ref_nll_sum += nll_ref;
        s->w.nll_count++;
    }
}

int dms_eval_kl(const dms_model *m, const dms_model *ref, const dms_kv_opts *kvo, const int32_t *const *windows,
                const int *index, int n, int T, int chunk, int batch, dms_eval_kl_cb cb, void *ctx,
                dms_eval_progress *progress, dms_err *err) {
    if (!ref) ref = m;
    const int V = m->cfg.vocab, lanes = m->cfg.n_layers * m->cfg.n_kv_heads;
    if (ref->cfg.vocab != V)
        return dms_errf(err, "%s: vocabulary of %d tokens, the model has %d: the reference must share the tokenizer",
                        ref->path, ref->cfg.vocab, V);
    if (T < 2) return dms_errf(err, "kl: windows of %d tokens (at least 2)", T);
    if (T > m->cfg.max_pos || T > ref->cfg.max_pos)
        return dms_errf(err, "kl: windows of %d tokens exceed the context of %s (%d tokens)", T,
                        T > m->cfg.max_pos ? m->path : ref->path,
                        T > m->cfg.max_pos ? m->cfg.max_pos : ref->cfg.max_pos);
    if (n <= 0) return 0;
    if (chunk < 1) chunk = 1;
    if (chunk > T) chunk = T;
    const int scored = dms_kv_opts_per_query(kvo); /* token by token through batched decode */
    int g = scored ? (batch < 1 ? 1 : batch) : 1;
    if (g > n) g = n;
    /* the vanilla run goes in longer calls (it needs no live-token samples):
     * R tokens, a multiple of the policy's chunk, its logits held for the
     * group within about 512 MiB */
    int R = chunk;
    while (R < 256 && R * 2 <= T && (double)g * R * 2 * V * sizeof(float) <= 512.0 * 1048576.0) R *= 2;

    dms_kv_opts ro, po = *kvo;
    dms_kv_opts_default(&ro);
    ro.policy = DMS_POLICY_FULL;
    ro.max_seqs = g;
    ro.max_chunk = R;
    po.max_seqs = g;
    po.max_chunk = chunk;
    dms_kv_paged *rkv = dms_kv_create(ref, &ro, err);
    if (!rkv) return -1;
    dms_kv_paged *pkv = dms_kv_create(m, &po, err);
    if (!pkv) {
        dms_kv_free(rkv);
        return -1;
    }
    float *refbuf = malloc(sizeof(float) * (size_t)g * R * V);
    float *polbuf = malloc(sizeof(float) * (size_t)(g > chunk ? g : chunk) * V);
    win *ws = calloc((size_t)g, sizeof(win));
    int *pseqs = malloc(sizeof(int) * (size_t)g);
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)g);
    int *lane_end = malloc(sizeof(int) * (size_t)lanes);
    double *lane_sum = malloc(sizeof(double) * (size_t)g * lanes);
    int *lane_last = malloc(sizeof(int) * (size_t)g * lanes);
    int rc = refbuf && polbuf && ws && pseqs && toks && lane_end && lane_sum && lane_last
                 ? 0
                 : dms_errf(err, "out of memory");

    for (int first = 0; rc == 0 && first < n; first += g) {
        const int gn = n - first < g ? n - first : g;
        for (int j = 0; j < gn; j++) ws[j].ref_seq = ws[j].pol_seq = -1;
        for (int j = 0; rc == 0 && j < gn; j++) {
            win *s = &ws[j];
            memset(s, 0, sizeof *s);
            s->lane_sum = lane_sum + (size_t)j * lanes;
            s->lane_last = lane_last + (size_t)j * lanes;
            memset(s->lane_sum, 0, sizeof(double) * (size_t)lanes);
            memset(s->lane_last, 0, sizeof(int) * (size_t)lanes);
            s->w.index = index ? index[first + j] : first + j;
            s->w.tokens = T;
            s->ids = windows[first + j];
            s->last_p = -1;
            s->t0 = dms_now_s();
            s->ref_seq = dms_kv_admit(rkv, err);
            s->pol_seq = s->ref_seq >= 0 ? dms_kv_admit(pkv, err) : -1;
            if (s->ref_seq < 0) s->pol_seq = -1;
            if (s->pol_seq < 0) rc = -1;
            pseqs[j] = s->pol_seq;
        }
        for (int r0 = 0; rc == 0 && r0 < T; r0 += R) {
            const int rn = T - r0 < R ? T - r0 : R;
            for (int j = 0; rc == 0 && j < gn; j++)
                rc = dms_kv_prefill(rkv, ws[j].ref_seq, ws[j].ids + r0, rn, refbuf + (size_t)j * R * V, 1, err);
            for (int p0 = r0; rc == 0 && p0 < r0 + rn; p0 += chunk) {
                const int c = r0 + rn - p0 < chunk ? r0 + rn - p0 : chunk;
                if (scored) { /* token by token, every window of the group in one decode call */
                    for (int k = 0; rc == 0 && k < c; k++) {
                        const int p = p0 + k;
                        for (int j = 0; j < gn; j++) toks[j] = ws[j].ids[p];
                        if ((rc = dms_kv_decode(pkv, pseqs, toks, gn, polbuf, err)) != 0) break;
                        for (int j = 0; j < gn; j++) {
                            win *s = &ws[j];
                            compare(s, refbuf + ((size_t)j * R + (p - r0)) * V, polbuf + (size_t)j * V, V, p, T);
                            s->w.reads_sum += s->last_h + lanes; /* read before evicting: what it held + itself */
                            s->w.reads_vanilla_sum += (double)(p + 1) * lanes;
                            sample_held(s, p, pkv, m);
                        }
                        dms_eval_progress_tokens(progress, gn);
                    }
                } else {
                    win *s = &ws[0];
                    if ((rc = dms_kv_prefill(pkv, s->pol_seq, s->ids + p0, c, polbuf, 1, err)) != 0) break;
                    for (int k = 0; k < c; k++) {
                        compare(s, refbuf + (size_t)(p0 - r0 + k) * V, polbuf + (size_t)k * V, V, p0 + k, T);
                        s->w.reads_vanilla_sum += (double)(p0 + k + 1) * lanes;
                    }
                    const double before = s->w.held_sum;
                    sample_held(s, p0 + c - 1, pkv, m);
                    s->w.reads_sum += s->w.held_sum - before; /* a query reads what it sees: the live tokens */
                    dms_eval_progress_tokens(progress, c);
                }
            }
        }
        for (int j = 0; j < gn; j++) {
            win *s = &ws[j];
            if (rc == 0) {
                dms_kv_seq_stats(pkv, s->pol_seq, &s->w.kv);
                for (int l = 0, i = 0; l < m->cfg.n_layers; l++)
                    for (int h = 0; h < m->cfg.n_kv_heads; h++) lane_end[i++] = dms_kv_lane_len(pkv, s->pol_seq, l, h);
                s->w.lane_end = lane_end;
                for (int i = 0; i < lanes; i++) s->lane_sum[i] /= T;
                s->w.lane_held = s->lane_sum;
                s->w.held_sum /= lanes;
                s->w.seconds = (dms_now_s() - s->t0) / gn;
                if (cb && cb(&s->w, ctx, err) != 0) rc = -1;
            }
            if (s->ref_seq >= 0) dms_kv_finish(rkv, s->ref_seq);
            if (s->pol_seq >= 0) dms_kv_finish(pkv, s->pol_seq);
        }
    }
    free(refbuf);
    free(polbuf);
    free(ws);
    free(pseqs);
    free(toks);
    free(lane_end);
    free(lane_sum);
    free(lane_last);
    dms_kv_free(pkv);
    dms_kv_free(rkv);
    return rc;
}
