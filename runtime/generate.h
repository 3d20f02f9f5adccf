/* generate.h - autoregressive generation: prefill the prompt, then decode
 * one token at a time with a sampler, streaming each token to a callback and
 * timing both phases. The KV cache is the paged runtime (runtime/kv_paged.h)
 * under the chosen policy, and the statistics say what it held. */
#ifndef DMS_GENERATE_H
#define DMS_GENERATE_H

#include <stdint.h>

#include "model/model.h"
#include "runtime/kv_paged.h"

typedef struct dms_gen_params {
    int max_new_tokens;
    float temperature; /* <= 0: greedy */
    int top_k;
    float top_p;
    uint64_t seed;
    int stop_at_eos;   /* stop on the tokenizer's stop tokens (needs m->tok) */
    dms_kv_opts kv;    /* policy, budget, block size; kv.max_chunk: prefill tokens per call */
} dms_gen_params;

typedef struct dms_gen_stats {
    int prompt_tokens, new_tokens;
    int decode_steps; /* forward calls after the prefill (new_tokens - 1 unless stopped) */
    double prefill_s, decode_s;
    int stopped_by_eos;
    dms_kv_stats kv;  /* at the end */
    int kv_blocks_peak, kv_block_size;
} dms_gen_stats;

/* Called for every generated token; return non-zero to stop early. */
typedef int (*dms_token_cb)(int32_t id, void *ctx);

void dms_gen_params_default(dms_gen_params *p);

/* Generates after `prompt`; the new ids are returned in *out (malloc'd,
 * caller frees) when out is not NULL. */
int dms_generate(const dms_model *m, const int32_t *prompt, int n_prompt, const dms_gen_params *p,
                 dms_token_cb cb, void *ctx, int32_t **out, dms_gen_stats *stats, dms_err *err);

#endif
