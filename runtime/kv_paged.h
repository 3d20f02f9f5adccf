/* kv_paged.h - the inference runtime's KV cache: a pool of fixed-size
 * blocks and, per (sequence, layer, KV head), a ragged "lane" of live
 * tokens whose blocks come from and go back to the pool, so that evicted
 * tokens really free memory. Eviction policies act on the same cache at
 * the same byte budget (DESIGN.md section 1, "Inference"):
 *   dms     - the model's own decisions: a token flagged by its successor
 *             leaves when it is `window` + 1 positions behind the newest;
 *   full    - nothing is evicted (vanilla);
 *   window  - the newest `budget` tokens (the DMS rule with every token
 *             flagged and window budget - 1);
 *   sinks   - the first `sinks` tokens and the newest budget - sinks
 *             (StreamingLLM; the DMS rule with the sinks unflagged);
 *   tova    - when over budget, the token with the lowest attention
 *             probability from the current query (summed over the group);
 *   h2o     - when over budget, outside the newest budget/2 tokens, the
 *             token with the lowest attention probability summed over
 *             every query so far (heavy hitters).
 * Lanes stay dense (a freed slot takes the lane's last token), so blocks
 * held always equal the live tokens rounded up per lane. Several sequences
 * share the pool and decode together (dms_kv_decode). */
#ifndef DMS_KV_PAGED_H
#define DMS_KV_PAGED_H

#include <stdint.h>

#include "model/model.h"

typedef enum {
    DMS_POLICY_DMS = 0,
    DMS_POLICY_FULL,
    DMS_POLICY_WINDOW,
    DMS_POLICY_SINKS,
    DMS_POLICY_TOVA,
    DMS_POLICY_H2O,
} dms_policy;

/* "dms", "full", ... ; -1 for an unknown name */
int dms_policy_from_name(const char *name);
const char *dms_policy_name(dms_policy p);
/* Whether the policy keeps tokens by attention scores (prefill then goes
 * token by token, so that the budget holds at every query). */
int dms_policy_scored(dms_policy p);

typedef struct dms_kv_opts {
    dms_policy policy;
    int budget;      /* tokens per (layer, KV head): window, sinks, tova, h2o */
    const int *lane_budget; /* window, sinks, tova, h2o: [layers * KV heads] a budget per lane instead (NULL:
                               `budget` in every lane; copied at create). The cache then evicts after every
                               query, window and sinks their oldest token (prompts go token by token) */
    int sinks;       /* sinks: first tokens kept (default 4) */
    int block_size;  /* tokens per block (0: dms_paged_attention_block_size for DMS models, else 16) */
    int window;      /* dms: eviction delay (0: the model's dms_window_size) */
    float dms_offset; /* dms: the decision's logit offset at inference (NAN, the default: the model's
                         dms_initial_alpha_offset). A token is flagged where alpha_scale * z - offset > 0,
                         so a higher offset keeps more: one trained model, several KV CRs */
    int max_seqs;    /* sequences at once (default 1) */
    int max_chunk;   /* tokens per forward call (default 256) */
    dms_dtype kv_dtype; /* K and V rows: DMS_F32 (default), or DMS_F16 / DMS_BF16 where the backend has
                           the narrow op (the CPU); attention accumulates in fp32 either way */
} dms_kv_opts;

/* "f32", "f16", "bf16" -> the KV dtype; -1 for another name. */
int dms_kv_dtype_from_name(const char *name);

void dms_kv_opts_default(dms_kv_opts *o);
/* Whether a cache with these options evicts at every query (scored
 * policies, and any policy with a budget per lane): prompts then go
 * token by token. */
int dms_kv_opts_per_query(const dms_kv_opts *o);

/* KV statistics of one sequence. */
typedef struct dms_kv_stats {
    int64_t seen;            /* tokens processed */
    double held_mean;        /* live tokens per (layer, head) now, mean over lanes */
    double held_time_mean;   /* the same averaged over every token processed */
    double held_peak;        /* max over time of the mean over lanes */
    double kv_cr;            /* seen / held_mean: what memory gets */
    double decision_cr;      /* 1 / (1 - fraction of tokens flagged) (dms) */
    size_t bytes_held;       /* K and V of its live blocks */
    size_t bytes_vanilla;    /* K and V of `seen` tokens in every lane */
    int blocks_held;
} dms_kv_stats;

typedef struct dms_kv_paged dms_kv_paged;

/* A runtime for model m with its own forward scratch. The model must have
 * DMS heads for the dms policy. */
dms_kv_paged *dms_kv_create(const dms_model *m, const dms_kv_opts *o, dms_err *err);
void dms_kv_free(dms_kv_paged *kv);

/* A new empty sequence (its id), or -1 when max_seqs are active. */
int dms_kv_admit(dms_kv_paged *kv, dms_err *err);
/* Ends a sequence: every block it held goes back to the pool. */
void dms_kv_finish(dms_kv_paged *kv, int seq);
/* Appends n tokens to sequence seq (a prompt, or a later turn: the state
 * continues). logits: [n, V] (all = 1) or [V] of the last token. */
int dms_kv_prefill(dms_kv_paged *kv, int seq, const int32_t *ids, int n, float *logits, int all, dms_err *err);
/* One token for each of n sequences, in one batched forward call;
 * logits [n, V]. */
int dms_kv_decode(dms_kv_paged *kv, const int *seqs, const int32_t *ids, int n, float *logits, dms_err *err);

void dms_kv_seq_stats(const dms_kv_paged *kv, int seq, dms_kv_stats *st);
/* Live tokens of lane (layer, head) of seq. */
int dms_kv_lane_len(const dms_kv_paged *kv, int seq, int layer, int head);
/* Whether lane (layer, head) of seq still holds the token at position pos. */
int dms_kv_lane_holds(const dms_kv_paged *kv, int seq, int layer, int head, int pos);
/* Tokens the sequence has processed (its next position). */
int dms_kv_seq_len(const dms_kv_paged *kv, int seq);
/* Pool accounting: blocks in use now, at peak, and the block size. */
int dms_kv_blocks_in_use(const dms_kv_paged *kv);
int dms_kv_blocks_peak(const dms_kv_paged *kv);
int dms_kv_block_size(const dms_kv_paged *kv);
/* The policy's effective window (dms: the eviction delay). */
int dms_kv_window(const dms_kv_paged *kv);

#endif
