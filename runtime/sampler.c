/* sampler.c - greedy / temperature / top-k / top-p sampling (sampler.h). */
#include "runtime/sampler.h"

#include <math.h>
#include <stdlib.h>

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [0, 1) */
static double rand_unit(uint64_t *s) { return (double)(splitmix64(s) >> 11) * (1.0 / 9007199254740992.0); }

int dms_sampler_init(dms_sampler *s, int vocab, float temperature, int top_k, float top_p, uint64_t seed) {
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    s->rng = seed;
    s->vocab = vocab;
    s->probs = malloc(sizeof(float) * (size_t)vocab);
    s->idx = malloc(sizeof(int32_t) * (size_t)vocab);
    return s->probs && s->idx ? 0 : -1;
}

void dms_sampler_free(dms_sampler *s) {
    free(s->probs);
    free(s->idx);
    s->probs = NULL;
    s->idx = NULL;
}

int32_t dms_argmax(const float *logits, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

/* Descending by probability, ties by index (qsort_r from glibc). */
static int by_prob_desc(const void *a, const void *b, void *ctx) {
    const float *p = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (p[i] != p[j]) return p[i] > p[j] ? -1 : 1;
    return i < j ? -1 : (i > j);
}

int32_t dms_sample(dms_sampler *s, const float *logits) {
    if (s->temperature <= 0.0f) return dms_argmax(logits, s->vocab);
    const int V = s->vocab;
    float mx = logits[dms_argmax(logits, V)];
    double sum = 0.0;
    for (int i = 0; i < V; i++) {
        s->probs[i] = expf((logits[i] - mx) / s->temperature);
        sum += s->probs[i];
    }
    for (int i = 0; i < V; i++) {
        s->probs[i] = (float)(s->probs[i] / sum);
        s->idx[i] = i;
    }
    int n = V;
    if ((s->top_k > 0 && s->top_k < V) || s->top_p < 1.0f) {
        qsort_r(s->idx, (size_t)V, sizeof(int32_t), by_prob_desc, s->probs);
        if (s->top_k > 0 && s->top_k < V) n = s->top_k;
        if (s->top_p < 1.0f) {
            double cum = 0.0;
            for (int i = 0; i < n; i++) {
                cum += s->probs[s->idx[i]];
                if (cum >= s->top_p) {
                    n = i + 1;
                    break;
                }
            }
        }
    }
    double total = 0.0;
    for (int i = 0; i < n; i++) total += s->probs[s->idx[i]];
    double r = rand_unit(&s->rng) * total, acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += s->probs[s->idx[i]];
        if (r < acc) return s->idx[i];
    }
    return s->idx[n - 1];
}
