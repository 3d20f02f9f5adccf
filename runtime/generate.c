/* generate.c - prefill + sampled decode loop with timing (generate.h). */
#include "runtime/generate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    dms_kv_opts_default(&p->kv);
    p->kv.policy = DMS_POLICY_FULL;
}

int dms_generate(const dms_model *m, const int32_t *prompt, int n_prompt, const dms_gen_params *p,
                 dms_token_cb cb, void *ctx, int32_t **out, dms_gen_stats *stats, dms_err *err) {
    memset(stats, 0, sizeof *stats);
    if (out) *out = NULL;
    if (n_prompt <= 0) return dms_errf(err, "generate: empty prompt");
    if (n_prompt + p->max_new_tokens > m->cfg.max_pos)
        return dms_errf(err, "generate: prompt (%d) + new tokens (%d) exceed the model's context of %d",
                        n_prompt, p->max_new_tokens, m->cfg.max_pos);
    dms_kv_opts ko = p->kv;
    ko.max_seqs = 1;
    if (ko.max_chunk > n_prompt) ko.max_chunk = n_prompt;
    dms_kv_paged *kv = dms_kv_create(m, &ko, err);
    if (!kv) return -1;
    dms_sampler sampler;
    float *logits = malloc(sizeof(float) * (size_t)m->cfg.vocab);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(p->max_new_tokens > 0 ? p->max_new_tokens : 1));
    int rc = dms_sampler_init(&sampler, m->cfg.vocab, p->temperature, p->top_k, p->top_p, p->seed);
    const int sampler_ok = rc == 0;
    if (rc != 0 || !logits || !ids) rc = dms_errf(err, "generate: out of memory");
    const int seq = rc == 0 ? dms_kv_admit(kv, err) : -1;
    if (seq < 0) rc = -1;

    double t0 = now_s();
    if (rc == 0) rc = dms_kv_prefill(kv, seq, prompt, n_prompt, logits, 0, err);
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
        rc = dms_kv_decode(kv, &seq, &next, 1, logits, err);
        stats->decode_steps++;
    }
    stats->decode_s = now_s() - t1;
    stats->new_tokens = n;
    if (seq >= 0) dms_kv_seq_stats(kv, seq, &stats->kv);
    stats->kv_blocks_peak = dms_kv_blocks_peak(kv);
    stats->kv_block_size = dms_kv_block_size(kv);
    if (rc == 0 && out) {
        *out = ids;
        ids = NULL;
    }
    free(ids);
    free(logits);
    if (sampler_ok) dms_sampler_free(&sampler);
    dms_kv_free(kv);
    return rc;
}
