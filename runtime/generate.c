/* generate.c - prefill + sampled decode loop with timing (generate.h). */
#include "runtime/generate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/kv_dense.h"
#include "runtime/sampler.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void dms_gen_params_default(dms_gen_params *p) {
    memset(p, 0, sizeof *p);
    p->max_new_tokens = 128;
    p->temperature = 0.0f;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->seed = 1234;
    p->stop_at_eos = 1;
    p->prefill_chunk = 256;
}

int dms_generate(const dms_model *m, const int32_t *prompt, int n_prompt, const dms_gen_params *p,
                 dms_token_cb cb, void *ctx, int32_t **out, dms_gen_stats *stats, dms_err *err) {
    memset(stats, 0, sizeof *stats);
    if (out) *out = NULL;
    if (n_prompt <= 0) return dms_errf(err, "generate: empty prompt");
    const int max_seq = n_prompt + p->max_new_tokens;
    if (max_seq > m->cfg.max_pos)
        return dms_errf(err, "generate: prompt (%d) + new tokens (%d) exceed the model's context of %d",
                        n_prompt, p->max_new_tokens, m->cfg.max_pos);
    dms_kv_dense cache;
    dms_forward_state st;
    dms_sampler sampler;
    if (dms_kv_dense_init(&cache, m, max_seq, err) != 0) return -1;
    const int chunk = p->prefill_chunk > 0 ? p->prefill_chunk : 256;
    if (dms_forward_state_init(&st, m, n_prompt < chunk ? n_prompt : chunk, err) != 0) {
        dms_kv_dense_free(&cache);
        return -1;
    }
    float *logits = malloc(sizeof(float) * (size_t)m->cfg.vocab);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(p->max_new_tokens > 0 ? p->max_new_tokens : 1));
    int rc = dms_sampler_init(&sampler, m->cfg.vocab, p->temperature, p->top_k, p->top_p, p->seed);
    if (rc != 0 || !logits || !ids) rc = dms_errf(err, "generate: out of memory");

    double t0 = now_s();
    if (rc == 0) rc = dms_model_forward(m, &cache.base, &st, prompt, n_prompt, logits, 1, err);
    double t1 = now_s();
    stats->prompt_tokens = n_prompt;
    stats->prefill_s = t1 - t0;
    int n = 0;
    while (rc == 0 && n < p->max_new_tokens) {
        int32_t next = dms_sample(&sampler, logits);
        ids[n++] = next;
        if (p->stop_at_eos && m->tok && dms_tokenizer_is_stop(m->tok, next)) {
            stats->stopped_by_eos = 1;
            break;
        }
        if (cb && cb(next, ctx)) break;
        if (n == p->max_new_tokens) break;
        rc = dms_model_forward(m, &cache.base, &st, &next, 1, logits, 1, err);
        stats->decode_steps++;
    }
    stats->decode_s = now_s() - t1;
    stats->new_tokens = n;
    stats->kv_tokens = cache.base.len;
    stats->kv_bytes_used = dms_kv_dense_bytes_used(&cache);
    stats->kv_bytes_reserved = dms_kv_dense_bytes_reserved(&cache);
    if (rc == 0 && out) {
        *out = ids;
        ids = NULL;
    }
    free(ids);
    free(logits);
    dms_sampler_free(&sampler);
    dms_forward_state_free(&st);
    dms_kv_dense_free(&cache);
    return rc;
}
