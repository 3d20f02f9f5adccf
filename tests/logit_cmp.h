/* logit_cmp.h - comparing two runs' logits in tests (quantised weights
 * against fp32, a 16-bit KV cache against fp32): the largest difference,
 * KL(want || got), top-1 agreement, and the top-2 margin that says where a
 * greedy choice may flip. Header-only so that each test links it alone. */
#ifndef DMS_TESTS_LOGIT_CMP_H
#define DMS_TESTS_LOGIT_CMP_H

#include <math.h>
#include <stddef.h>

#include "runtime/sampler.h"

typedef struct {
    double max_abs, max_logit, kl_sum, kl_max;
    long top1_same, positions;
} logit_cmp;

/* log-sum-exp of a row */
static inline double logit_lse(const float *z, int V) {
    double mx = -INFINITY, s = 0;
    for (int v = 0; v < V; v++) mx = fmax(mx, z[v]);
    for (int v = 0; v < V; v++) s += exp(z[v] - mx);
    return mx + log(s);
}

/* adds T rows of got[T, V] against want[T, V] to c */
static inline void cmp_logits(logit_cmp *c, const float *got, const float *want, int T, int V) {
    for (int t = 0; t < T; t++) {
        const float *g = got + (size_t)t * V, *w = want + (size_t)t * V;
        const double lg = logit_lse(g, V), lw = logit_lse(w, V);
        double kl = 0; /* KL(p_want || p_got) */
        for (int v = 0; v < V; v++) {
            c->max_abs = fmax(c->max_abs, fabs((double)g[v] - w[v]));
            c->max_logit = fmax(c->max_logit, fabs((double)w[v]));
            kl += exp(w[v] - lw) * ((w[v] - lw) - (g[v] - lg));
        }
        c->kl_sum += kl;
        c->kl_max = fmax(c->kl_max, kl);
        c->top1_same += dms_argmax(g, V) == dms_argmax(w, V);
        c->positions++;
    }
}

/* top-1 minus top-2 logit of a row */
static inline double top2_margin(const float *z, int V) {
    const int a = dms_argmax(z, V);
    double second = -INFINITY;
    for (int v = 0; v < V; v++)
        if (v != a) second = fmax(second, z[v]);
    return z[a] - second;
}

#endif
