/* test_runtime.c - the paged KV runtime (runtime/kv_paged.h) against
 * dense references, on the tiny Qwen3 fixture with random adapter heads
 * that flag about a third of the tokens:
 * - token-by-token decoding equals a dense forward with the hard-decision
 *   mask (DESIGN.md section 1, "Inference") to 1e-4;
 * - chunked prefill, any chunk size, equals token-by-token decoding;
 * - prefill after decode (multi-turn) continues the same state;
 * - sequences of different lengths decoded together equal each alone;
 * - blocks in use always equal the live tokens rounded up per lane, and
 *   10,000 random admit / prefill / decode / finish events leak nothing;
 * - the baselines: full equals the plain cache, window and sinks equal
 *   dense forwards with their masks, every budget holds. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/layer.h"
#include "model/model.h"
#include "runtime/kv_dense.h"
#include "runtime/kv_paged.h"
#include "tests/check.h"
#include "train/trainer.h"
#include "train/trainer_testing.h"

#define TINY "tests/fixtures/models/tiny_qwen3"
#define T_SEQ 40
#define WINDOW 4
#define BLOCK 3

static uint64_t rng = 0x5eed;
static uint32_t next_u32(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng >> 33);
}

/* ---- the dense reference: one pass over the whole sequence with a mask ---- */

typedef enum { MASK_DMS, MASK_ALL_FLAGGED, MASK_SINKS } mask_kind;
typedef struct {
    dms_attn base;
    mask_kind kind;
    int window, sinks, T;
    int32_t *seg;
    float *log_keep, *zhost;
} dense_ref;

static void dense_attend(dms_attn *self, const dms_model *m, int l, dms_layer_acts *a, int n) {
    dense_ref *r = (dense_ref *)self;
    const dms_config *c = &m->cfg;
    const int KV = c->n_kv_heads;
    (void)l;
    if (r->kind == MASK_DMS) memcpy(r->zhost, a->zraw, sizeof(float) * (size_t)n * KV);
    for (int j = 0; j < n; j++)
        for (int h = 0; h < KV; h++) {
            int flagged;
            if (r->kind == MASK_DMS) { /* flag[j] = d_{j+1} */
                const float z = j + 1 < n ? r->zhost[(size_t)(j + 1) * KV + (c->dms.alpha_per_layer ? 0 : h)] : -1e30f;
                flagged = c->dms.alpha_scale * z - c->dms.alpha_offset > 0 && j >= c->dms.sink_tokens;
            } else {
                flagged = r->kind == MASK_ALL_FLAGGED || j >= r->sinks;
            }
            r->log_keep[(size_t)j * KV + h] = flagged ? -INFINITY : 0.0f;
        }
    m->be->attention_dms_fwd(m->be->ctx, a->att, a->lse, a->q, a->k, a->v, r->log_keep, r->seg, n, c->n_heads, KV,
                             c->head_dim, r->window, 1.0f / sqrtf((float)c->head_dim));
}

/* logits [T, V] of the whole sequence under the mask */
static void dense_logits(const dms_model *m, const int32_t *ids, int T, mask_kind kind, int window, int sinks,
                         float *out) {
    dms_err err = {0};
    dms_forward_state fs;
    CHECK_MSG(dms_forward_state_init(&fs, m, T, &err) == 0, "%s", err.msg);
    dense_ref r = {{kind == MASK_DMS, dense_attend, 0.0f}, kind, window, sinks, T, calloc((size_t)T, sizeof(int32_t)),
                   malloc(sizeof(float) * (size_t)T * m->cfg.n_kv_heads),
                   malloc(sizeof(float) * (size_t)T * m->cfg.n_kv_heads)};
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)T);
    for (int i = 0; i < T; i++) pos[i] = i;
    dms_model_forward_tokens(m, &r.base, &fs, ids, pos, T, out, 0);
    free(pos);
    free(r.seg);
    free(r.log_keep);
    free(r.zhost);
    dms_forward_state_free(&fs);
}

/* ---- helpers over the runtime ---- */

static dms_kv_paged *runtime(const dms_model *m, dms_policy pol, int budget, int max_seqs, int max_chunk) {
    dms_kv_opts o;
    dms_kv_opts_default(&o);
    o.policy = pol;
    o.budget = budget;
    o.block_size = BLOCK;
    o.max_seqs = max_seqs;
    o.max_chunk = max_chunk;
    dms_err err = {0};
    dms_kv_paged *kv = dms_kv_create(m, &o, &err);
    CHECK_MSG(kv != NULL, "%s", err.msg);
    return kv;
}

/* Blocks in use must equal the sum over active lanes of ceil(n / block). */
static int blocks_expected(const dms_kv_paged *kv, const dms_model *m, const int *active, int n_active) {
    int want = 0;
    for (int a = 0; a < n_active; a++)
        for (int l = 0; l < m->cfg.n_layers; l++)
            for (int h = 0; h < m->cfg.n_kv_heads; h++)
                want += (dms_kv_lane_len(kv, active[a], l, h) + BLOCK - 1) / BLOCK;
    return want;
}

/* token-by-token logits of ids[0..T) in a fresh sequence; checks blocks at every step */
static void decode_logits(dms_kv_paged *kv, const dms_model *m, const int32_t *ids, int T, float *out) {
    dms_err err = {0};
    const int V = m->cfg.vocab;
    int s = dms_kv_admit(kv, &err);
    CHECK_MSG(s >= 0, "%s", err.msg);
    int blocks_ok = 1;
    CHECK(dms_kv_prefill(kv, s, ids, 1, out, 1, &err) == 0);
    for (int t = 1; t < T; t++) {
        CHECK_MSG(dms_kv_decode(kv, &s, ids + t, 1, out + (size_t)t * V, &err) == 0, "%s", err.msg);
        blocks_ok &= dms_kv_blocks_in_use(kv) == blocks_expected(kv, m, &s, 1);
    }
    CHECK_MSG(blocks_ok, "blocks in use differ from the live tokens rounded up");
    dms_kv_finish(kv, s);
}

static void random_ids(int32_t *ids, int n, int V) {
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(next_u32() % (uint32_t)V);
}

/* ---- the tests ---- */

static void dms_equivalences(const dms_model *m) {
    const int V = m->cfg.vocab, T = T_SEQ;
    int32_t ids[T_SEQ];
    random_ids(ids, T, V);
    float *dense = malloc(sizeof(float) * (size_t)T * V), *tok = malloc(sizeof(float) * (size_t)T * V),
          *chunked = malloc(sizeof(float) * (size_t)T * V);
    dense_logits(m, ids, T, MASK_DMS, WINDOW, 0, dense);
    dms_kv_paged *kv = runtime(m, DMS_POLICY_DMS, 0, 1, 16);
    if (!kv) return;
    decode_logits(kv, m, ids, T, tok);
    double e = dms_rel_err(tok, dense, (size_t)T * V);
    printf("dms: token-by-token vs dense hard-mask forward: rel err %.3g\n", e);
    CHECK_MSG(e < 1e-4, "decode differs from the dense hard-decision forward: %.3g", e);
    /* the decisions really evict: the lanes hold fewer than T tokens */
    dms_err err = {0};
    int s = dms_kv_admit(kv, &err);
    CHECK(dms_kv_prefill(kv, s, ids, T, chunked, 1, &err) == 0);
    dms_kv_stats st;
    dms_kv_seq_stats(kv, s, &st);
    printf("dms (sinks %d): %lld tokens, held %.1f per lane (KV CR %.2f, decision CR %.2f), %d blocks\n",
           m->cfg.dms.sink_tokens, (long long)st.seen, st.held_mean, st.kv_cr, st.decision_cr, st.blocks_held);
    CHECK_MSG(st.kv_cr > 1.3 && st.decision_cr > 1.2, "the heads barely evict (KV CR %.2f)", st.kv_cr);
    CHECK(st.held_mean >= WINDOW + 1);
    dms_kv_finish(kv, s);
    dms_kv_free(kv);
    /* chunked prefill, any chunk size, equals token by token */
    const int chunks[] = {1, 2, 3, 5, 7, 16};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        kv = runtime(m, DMS_POLICY_DMS, 0, 1, chunks[c]);
        s = dms_kv_admit(kv, &err);
        CHECK(dms_kv_prefill(kv, s, ids, T, chunked, 1, &err) == 0);
        e = dms_rel_err(chunked, tok, (size_t)T * V);
        CHECK_MSG(e < 1e-5, "prefill in chunks of %d differs from token by token: %.3g", chunks[c], e);
        int same = 1;
        dms_kv_paged *ref = runtime(m, DMS_POLICY_DMS, 0, 1, 16);
        int r = dms_kv_admit(ref, &err);
        for (int t = 0; t < T; t++) CHECK(dms_kv_prefill(ref, r, ids + t, 1, chunked, 0, &err) == 0);
        for (int l = 0; l < m->cfg.n_layers; l++)
            for (int h = 0; h < m->cfg.n_kv_heads; h++)
                same &= dms_kv_lane_len(kv, s, l, h) == dms_kv_lane_len(ref, r, l, h);
        CHECK_MSG(same, "chunk %d: lane lengths differ from token-by-token prefill", chunks[c]);
        dms_kv_free(ref);
        dms_kv_free(kv);
    }
    free(dense);
    free(tok);
    free(chunked);
}

/* dms_sink_tokens: every lane still holds the first tokens at the end */
static void sinks_kept(const dms_model *m) {
    int32_t ids[T_SEQ];
    random_ids(ids, T_SEQ, m->cfg.vocab);
    dms_kv_paged *kv = runtime(m, DMS_POLICY_DMS, 0, 1, 5);
    dms_err err = {0};
    int s = dms_kv_admit(kv, &err);
    float *logits = malloc(sizeof(float) * (size_t)m->cfg.vocab);
    CHECK(dms_kv_prefill(kv, s, ids, T_SEQ, logits, 0, &err) == 0);
    dms_kv_stats st;
    dms_kv_seq_stats(kv, s, &st);
    CHECK_MSG(st.held_mean >= WINDOW + 1 + m->cfg.dms.sink_tokens && st.kv_cr > 1.2, "held %.1f", st.held_mean);
    free(logits);
    dms_kv_free(kv);
}

/* prompt, 6 decoded tokens, a second turn: the same as one sequence */
static void multi_turn(const dms_model *m) {
    const int V = m->cfg.vocab;
    int32_t ids[T_SEQ];
    random_ids(ids, T_SEQ, V);
    float *a = malloc(sizeof(float) * (size_t)T_SEQ * V), *b = malloc(sizeof(float) * (size_t)T_SEQ * V);
    dms_kv_paged *kv = runtime(m, DMS_POLICY_DMS, 0, 1, 8);
    dms_err err = {0};
    decode_logits(kv, m, ids, T_SEQ, a);
    int s = dms_kv_admit(kv, &err);
    CHECK(dms_kv_prefill(kv, s, ids, 15, b, 1, &err) == 0);
    for (int t = 15; t < 21; t++) CHECK(dms_kv_decode(kv, &s, ids + t, 1, b + (size_t)t * V, &err) == 0);
    CHECK(dms_kv_prefill(kv, s, ids + 21, T_SEQ - 21, b + (size_t)21 * V, 1, &err) == 0);
    const double e = dms_rel_err(b, a, (size_t)T_SEQ * V);
    CHECK_MSG(e < 1e-5, "multi-turn differs from one sequence: %.3g", e);
    CHECK(dms_kv_seq_len(kv, s) == T_SEQ);
    dms_kv_free(kv);
    free(a);
    free(b);
}

/* three sequences of different lengths decoded together = each alone */
static void batched(const dms_model *m) {
    const int V = m->cfg.vocab, n_seq = 3, lens[3] = {5, 12, 1};
    int32_t ids[3][T_SEQ];
    for (int i = 0; i < n_seq; i++) random_ids(ids[i], T_SEQ, V);
    dms_kv_paged *alone = runtime(m, DMS_POLICY_DMS, 0, 1, 8), *kv = runtime(m, DMS_POLICY_DMS, 0, n_seq, 8);
    dms_err err = {0};
    float *want = malloc(sizeof(float) * (size_t)n_seq * T_SEQ * V), *got = malloc(sizeof(float) * (size_t)n_seq * V);
    for (int i = 0; i < n_seq; i++) decode_logits(alone, m, ids[i], T_SEQ, want + (size_t)i * T_SEQ * V);
    int seqs[3];
    float *scratch = malloc(sizeof(float) * (size_t)V);
    for (int i = 0; i < n_seq; i++) {
        seqs[i] = dms_kv_admit(kv, &err);
        CHECK(dms_kv_prefill(kv, seqs[i], ids[i], lens[i], scratch, 0, &err) == 0);
    }
    double worst = 0;
    for (int step = 0; step + lens[1] < T_SEQ; step++) {
        int32_t next[3];
        for (int i = 0; i < n_seq; i++) next[i] = ids[i][lens[i] + step];
        CHECK(dms_kv_decode(kv, seqs, next, n_seq, got, &err) == 0);
        for (int i = 0; i < n_seq; i++)
            worst = fmax(worst, dms_rel_err(got + (size_t)i * V, want + ((size_t)i * T_SEQ + lens[i] + step) * V, V));
    }
    CHECK_MSG(worst < 1e-5, "batched decode differs from decoding alone: %.3g", worst);
    CHECK(dms_kv_blocks_in_use(kv) == blocks_expected(kv, m, seqs, n_seq));
    free(scratch);
    free(want);
    free(got);
    dms_kv_free(alone);
    dms_kv_free(kv);
}

/* 10,000 random events over 4 sequence slots: blocks always match, and all
 * come back to the pool. */
static void no_leaks(const dms_model *m) {
    const int V = m->cfg.vocab, slots = 4;
    dms_kv_paged *kv = runtime(m, DMS_POLICY_DMS, 0, slots, 6);
    dms_err err = {0};
    int active[4], n_active = 0, mismatches = 0, failures = 0;
    float *logits = malloc(sizeof(float) * (size_t)6 * slots * V);
    int32_t ids[8];
    for (int ev = 0; ev < 10000; ev++) {
        const uint32_t r = next_u32() % 100;
        if ((r < 10 && n_active < slots) || n_active == 0) {
            active[n_active++] = dms_kv_admit(kv, &err);
        } else if (r < 20) {
            const int i = (int)(next_u32() % (uint32_t)n_active);
            dms_kv_finish(kv, active[i]);
            active[i] = active[--n_active];
        } else if (r < 40) {
            const int i = (int)(next_u32() % (uint32_t)n_active), n = 1 + (int)(next_u32() % 6);
            random_ids(ids, n, V);
            if (dms_kv_seq_len(kv, active[i]) + n < m->cfg.max_pos)
                failures += dms_kv_prefill(kv, active[i], ids, n, logits, 0, &err) != 0;
        } else {
            random_ids(ids, n_active, V);
            int ok = 1;
            for (int i = 0; i < n_active; i++) ok &= dms_kv_seq_len(kv, active[i]) + 1 < m->cfg.max_pos;
            if (ok) failures += dms_kv_decode(kv, active, ids, n_active, logits, &err) != 0;
        }
        mismatches += dms_kv_blocks_in_use(kv) != blocks_expected(kv, m, active, n_active);
    }
    CHECK_MSG(failures == 0, "%d runtime calls failed (%s)", failures, err.msg);
    CHECK_MSG(mismatches == 0, "blocks in use differed from the live tokens at %d of 10000 events", mismatches);
    for (int i = 0; i < n_active; i++) dms_kv_finish(kv, active[i]);
    CHECK_MSG(dms_kv_blocks_in_use(kv) == 0, "%d blocks leaked", dms_kv_blocks_in_use(kv));
    printf("10000 events: peak %d blocks, none leaked\n", dms_kv_blocks_peak(kv));
    dms_kv_free(kv);
    free(logits);
}

static void baselines(const dms_model *m) {
    const int V = m->cfg.vocab, T = T_SEQ, budget = 10, sinks = 4;
    int32_t ids[T_SEQ];
    random_ids(ids, T, V);
    float *ref = malloc(sizeof(float) * (size_t)T * V), *got = malloc(sizeof(float) * (size_t)T * V);
    dms_err err = {0};
    /* full equals the plain contiguous cache */
    dms_kv_dense dense;
    dms_forward_state fs;
    CHECK(dms_kv_dense_init(&dense, m, T, &err) == 0 && dms_forward_state_init(&fs, m, 1, &err) == 0);
    CHECK(dms_model_forward(m, &dense.base, &fs, ids, T, ref, 0, &err) == 0);
    dms_kv_dense_free(&dense);
    dms_forward_state_free(&fs);
    dms_kv_paged *kv = runtime(m, DMS_POLICY_FULL, 0, 1, 8);
    decode_logits(kv, m, ids, T, got);
    CHECK_MSG(dms_rel_err(got, ref, (size_t)T * V) < 1e-5, "full differs from the plain cache");
    dms_kv_free(kv);
    /* window and sinks: the DMS rule with fixed flags = a dense masked pass */
    const struct {
        dms_policy pol;
        mask_kind mask;
        int window;
    } rules[] = {{DMS_POLICY_WINDOW, MASK_ALL_FLAGGED, budget - 1}, {DMS_POLICY_SINKS, MASK_SINKS, budget - sinks - 1}};
    for (size_t i = 0; i < 2; i++) {
        dense_logits(m, ids, T, rules[i].mask, rules[i].window, sinks, ref);
        kv = runtime(m, rules[i].pol, budget, 1, 7);
        int s = dms_kv_admit(kv, &err);
        CHECK(dms_kv_prefill(kv, s, ids, T, got, 1, &err) == 0);
        const double e = dms_rel_err(got, ref, (size_t)T * V);
        CHECK_MSG(e < 1e-4, "%s differs from its dense masked forward: %.3g", dms_policy_name(rules[i].pol), e);
        CHECK_MSG(dms_kv_lane_len(kv, s, 0, 0) == budget, "%s holds %d tokens, budget %d",
                  dms_policy_name(rules[i].pol), dms_kv_lane_len(kv, s, 0, 0), budget);
        dms_kv_free(kv);
    }
    /* tova and h2o keep exactly the budget in every lane */
    for (int pol = DMS_POLICY_TOVA; pol <= DMS_POLICY_H2O; pol++) {
        kv = runtime(m, (dms_policy)pol, budget, 1, 8);
        decode_logits(kv, m, ids, T, got);
        int s = dms_kv_admit(kv, &err);
        CHECK(dms_kv_prefill(kv, s, ids, T, got, 0, &err) == 0);
        int ok = 1;
        for (int l = 0; l < m->cfg.n_layers; l++)
            for (int h = 0; h < m->cfg.n_kv_heads; h++) ok &= dms_kv_lane_len(kv, s, l, h) == budget;
        CHECK_MSG(ok, "%s does not hold exactly its budget", dms_policy_name((dms_policy)pol));
        dms_kv_stats st;
        dms_kv_seq_stats(kv, s, &st);
        CHECK_MSG(fabs(st.kv_cr - (double)T / budget) < 1e-9, "%s: KV CR %.3f", dms_policy_name((dms_policy)pol),
                  st.kv_cr);
        dms_kv_free(kv);
    }
    free(ref);
    free(got);
}

/* The KV CR that training reports equals what the runtime holds: with zero
 * noise the training decisions are the inference ones, and layer 0 sees the
 * same input in both (later layers differ: training attends with the soft
 * bias). */
static void training_kv_cr(dms_model *m) {
    const int T = T_SEQ, L = m->cfg.n_layers, KV = m->cfg.n_kv_heads, d = m->cfg.hidden;
    int32_t ids[T_SEQ], seg[T_SEQ] = {0};
    random_ids(ids, T, m->cfg.vocab);
    float *keep = malloc(sizeof(float) * (size_t)L * KV * d);
    for (int l = 0; l < L; l++) memcpy(keep + (size_t)l * KV * d, m->layers[l].heads.w_a.data, sizeof(float) * KV * d);
    dms_train_config cfg;
    dms_train_config_defaults(&cfg);
    cfg.max_len = T;
    cfg.window = WINDOW;
    dms_err err = {0};
    dms_trainer *tr = dms_trainer_create(m, &cfg, &err); /* fresh heads: put ours back */
    CHECK_MSG(tr != NULL, "%s", err.msg);
    if (!tr) return;
    for (int l = 0; l < L; l++) memcpy(m->layers[l].heads.w_a.data, keep + (size_t)l * KV * d, sizeof(float) * KV * d);
    float *zeros = calloc((size_t)L * T * KV, sizeof(float));
    dms_trainer_test_fix_noise(tr, zeros);
    const dms_row row = {ids, seg, NULL, 0, 0};
    dms_step_stats st;
    CHECK_MSG(dms_trainer_grads(tr, &row, 1, 0, T, 1, &st, &err) == 0, "%s", err.msg);
    dms_kv_paged *kv = runtime(m, DMS_POLICY_DMS, 0, 1, 16);
    int s = dms_kv_admit(kv, &err);
    float *logits = malloc(sizeof(float) * (size_t)m->cfg.vocab);
    CHECK(dms_kv_prefill(kv, s, ids, T, logits, 0, &err) == 0);
    double held = 0;
    for (int h = 0; h < KV; h++) held += dms_kv_lane_len(kv, s, 0, h);
    const double want = 1.0 - held / KV / T;
    printf("layer 0: training reports %.4f of the tokens dropped, the runtime dropped %.4f (KV CR %.3f)\n",
           st.kv_frac_layer[0], want, 1.0 / (1.0 - want));
    CHECK_MSG(fabs(st.kv_frac_layer[0] - want) < 1e-9 && want > 0.1, "training KV CR %.4f vs runtime %.4f",
              st.kv_frac_layer[0], want);
    CHECK_MSG(st.kv_frac < st.frac, "KV CR not below the decision CR (%.3f vs %.3f)", st.kv_frac, st.frac);
    dms_kv_free(kv);
    dms_trainer_free(tr);
    free(zeros);
    free(keep);
    free(logits);
}

/* held per lane and all logits of ids under policy dms with decision offset off (NAN: the model's) */
static double held_at_offset(const dms_model *m, const int32_t *ids, float off, float *logits) {
    dms_kv_opts o;
    dms_kv_opts_default(&o);
    o.block_size = BLOCK;
    o.max_chunk = 16;
    o.dms_offset = off;
    dms_err err = {0};
    dms_kv_paged *kv = dms_kv_create(m, &o, &err);
    CHECK_MSG(kv != NULL, "%s", err.msg);
    if (!kv) return -1;
    int s = dms_kv_admit(kv, &err);
    CHECK(dms_kv_prefill(kv, s, ids, T_SEQ, logits, 1, &err) == 0);
    dms_kv_stats st;
    dms_kv_seq_stats(kv, s, &st);
    dms_kv_free(kv);
    return st.held_mean;
}

/* --dms-offset: the threshold moves with it (a higher offset keeps more,
 * a huge one keeps everything), and an override acts exactly as a model
 * whose dms_initial_alpha_offset is that value */
static void decision_offset(dms_model *m) {
    const size_t n = (size_t)T_SEQ * m->cfg.vocab;
    int32_t ids[T_SEQ];
    random_ids(ids, T_SEQ, m->cfg.vocab);
    float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
    const double h3 = held_at_offset(m, ids, 3.0f, a), h5 = held_at_offset(m, ids, NAN, b),
                 h7 = held_at_offset(m, ids, 7.0f, b), hall = held_at_offset(m, ids, 1e9f, b);
    printf("dms decision offset 3 / model's (5) / 7 / 1e9: held %.1f / %.1f / %.1f / %.1f of %d\n", h3, h5, h7,
           hall, T_SEQ);
    CHECK_MSG(h3 < h5 && h5 < h7 && h7 <= hall, "held does not grow with the offset");
    CHECK_MSG(hall == T_SEQ, "an offset of 1e9 still evicts (held %.1f of %d)", hall, T_SEQ);
    const float saved = m->cfg.dms.alpha_offset;
    m->cfg.dms.alpha_offset = 3.0f;
    const double hc = held_at_offset(m, ids, NAN, b);
    m->cfg.dms.alpha_offset = saved;
    CHECK_MSG(hc == h3 && memcmp(a, b, sizeof(float) * n) == 0,
              "offset 3 differs from a model whose dms_initial_alpha_offset is 3");
    dms_kv_opts o;
    dms_kv_opts_default(&o);
    o.policy = DMS_POLICY_H2O;
    o.budget = 8;
    o.dms_offset = 3.0f;
    dms_err err = {0};
    CHECK(dms_kv_create(m, &o, &err) == NULL && strstr(err.msg, "applies to policy dms only"));
    free(a);
    free(b);
}

static void bad_options(const dms_model *m, const dms_model *base) {
    dms_kv_opts o;
    dms_kv_opts_default(&o);
    dms_err err = {0};
    CHECK(dms_kv_create(base, &o, &err) == NULL && strstr(err.msg, "policy dms needs a DMS model"));
    o.block_size = WINDOW;
    CHECK(dms_kv_create(m, &o, &err) == NULL && strstr(err.msg, "must be larger than the block size"));
    o.block_size = BLOCK;
    o.policy = DMS_POLICY_SINKS;
    o.budget = 4;
    CHECK(dms_kv_create(m, &o, &err) == NULL && strstr(err.msg, "needs a budget of at least 5"));
}

int main(void) {
    dms_err err = {0};
    dms_model m, base;
    int rc = dms_model_load(&m, TINY, &dms_cpu_ops, DMS_LOAD_WEIGHTS, &err);
    rc |= dms_model_load(&base, TINY, &dms_cpu_ops, DMS_LOAD_WEIGHTS, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) return dms_check_finish();
    dms_dms_config d;
    dms_dms_config_defaults(&d);
    d.separate_alpha = 1;
    d.window = WINDOW;
    d.block_size = BLOCK;
    CHECK_MSG(dms_model_init_heads(&m, &d, &err) == 0, "%s", err.msg);
    /* random adapter weights: z = 100 W_a . a - 5 > 0 for about a third of the tokens */
    for (int l = 0; l < m.cfg.n_layers; l++) {
        float *w = m.layers[l].heads.w_a.data;
        for (int i = 0; i < m.cfg.n_kv_heads * m.cfg.hidden; i++) w[i] = 0.03f * ((float)(next_u32() % 2001) / 1000.0f - 1.0f);
    }
    dms_equivalences(&m);
    m.cfg.dms.sink_tokens = 3; /* the extension: the first 3 tokens are never evicted */
    dms_equivalences(&m);
    sinks_kept(&m);
    m.cfg.dms.sink_tokens = 0;
    multi_turn(&m);
    batched(&m);
    no_leaks(&m);
    baselines(&m);
    training_kv_cr(&m);
    decision_offset(&m);
    bad_options(&m, &base);
    dms_model_free(&m);
    dms_model_free(&base);
    return dms_check_finish();
}
