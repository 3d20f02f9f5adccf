/* sampler.h - next-token choice from logits: greedy, or temperature with
 * top-k and top-p (nucleus) filtering, driven by a seeded RNG that lives in
 * the sampler (no global state), so a seed reproduces a generation. */
#ifndef DMS_SAMPLER_H
#define DMS_SAMPLER_H

#include <stdint.h>

typedef struct dms_sampler {
    float temperature; /* <= 0: greedy */
    int top_k;         /* <= 0: off */
    float top_p;       /* >= 1: off */
    uint64_t rng;      /* splitmix64 state */
    int vocab;
    /* scratch */
    float *probs;
    int32_t *idx;
} dms_sampler;

int dms_sampler_init(dms_sampler *s, int vocab, float temperature, int top_k, float top_p, uint64_t seed);
void dms_sampler_free(dms_sampler *s);
int32_t dms_sample(dms_sampler *s, const float *logits);
/* Index of the largest logit (first on ties). */
int32_t dms_argmax(const float *logits, int n);

#endif
