/* logit_cmp.h - comparing two runs' logits in tests (quantised weights
 * against fp32, a 16-bit KV cache against fp32): the prompts both
 * comparisons run, the largest difference, KL(want || got), top-1
 * agreement, and the top-2 margin that says where a greedy choice may flip.
 * Header-only so that each test links it alone. */
#ifndef DMS_TESTS_LOGIT_CMP_H
#define DMS_TESTS_LOGIT_CMP_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/safetensors.h"
#include "model/tokenizer.h"
#include "runtime/sampler.h"

#define CMP_N_PROMPTS 3

/* Prompt p of CMP_N_PROMPTS: 0 = the recorded reference's input_ids, 1 and
 * 2 = a prose and a code text through the tokenizer. Returns the ids
 * (malloc'd, *T of them), or NULL with err set. */
static inline int32_t *cmp_prompt(int p, const dms_st_tensor *ids_t, const dms_tokenizer *tok, size_t *T,
                                  dms_err *err) {
    static const char *const texts[] = {
        "The quick brown fox jumps over the lazy dog. In the morning, the fox went to",
        "def fibonacci(n):\n    if n < 2:\n        return n\n    return"};
    int32_t *ids = NULL;
    if (p == 0) {
        *T = (size_t)ids_t->shape[0];
        if ((ids = malloc(sizeof(int32_t) * *T))) memcpy(ids, ids_t->data, sizeof(int32_t) * *T);
        else dms_errf(err, "out of memory");
        return ids;
    }
    if (dms_tokenizer_encode(tok, texts[p - 1], strlen(texts[p - 1]), 0, &ids, T, err) != 0) return NULL;
    return ids;
}

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
