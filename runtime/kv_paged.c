/* kv_paged.c - the block pool, the per-(sequence, layer, KV head) lanes,
 * the eviction policies and the attention strategy that ties them to the
 * model's layer function (kv_paged.h). Bookkeeping is on the host; K and V
 * live in backend memory, in fp32 or (o.kv_dtype, through the backend's
 * narrow op) fp16 / bf16, and are read by the backend's attention_paged. */
#include "runtime/kv_paged.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend_check.h"
#include "kernels/dtype.h"
#include "model/layer.h"

/* Blocks allocated at once when the pool runs dry. */
#define POOL_SEGMENT 64

typedef struct lane {
    int n, cap;          /* live tokens (slots 0..n-1), slot capacity */
    int nblk, blk_cap;   /* blocks held */
    void **k_blk, **v_blk;
    int32_t *blk_id;
    int32_t *pos;        /* [cap] position of each slot */
    uint8_t *flag;       /* [cap] flagged for eviction */
    float *score;        /* [cap] attention sums (tova, h2o) */
    int32_t *ring;       /* [ring] slot of a recent position p at p % ring, -1 if gone */
    int64_t cursor;      /* every position below it was examined for eviction */
    int64_t flagged;     /* decisions that flagged a token */
} lane;

typedef struct seq {
    int active, len;
    lane *lanes;         /* [L * KV], layer-major */
    double held_time_sum, held_peak;
} seq;

struct dms_kv_paged {
    dms_attn attn;       /* first: the strategy handed to the layer function */
    const dms_model *m;
    const dms_backend *be;
    dms_kv_opts o;
    int L, KV, hd, bs, window, ring, per_layer;
    int *lane_budget; /* [L * KV] or NULL: o.budget everywhere */
    size_t row_bytes;    /* one key (or value) row in the cache dtype o.kv_dtype */
    float scale, z_scale, z_offset;
    /* pool */
    void **blk_k, **blk_v; /* [n_blocks] */
    int n_blocks, blocks_cap, *free_ids, n_free, in_use, peak;
    dms_arena pool_arena;
    /* sequences */
    seq *seqs;
    /* the current forward call: sequence and position of each token */
    int n_tok, *tok_seq, *tok_pos;
    float *zhost;           /* [max tokens, KV] decision logits of a layer */
    dms_kv_lane_view *views;
    dms_forward_state fs;
    int failed;             /* a host allocation failed inside attend */
};

static const char *const policy_names[] = {"dms", "full", "window", "sinks", "tova", "h2o"};

int dms_policy_from_name(const char *name) {
    for (int i = 0; i < (int)(sizeof policy_names / sizeof policy_names[0]); i++)
        if (name && !strcmp(name, policy_names[i])) return i;
    return -1;
}
const char *dms_policy_name(dms_policy p) { return policy_names[p]; }
int dms_policy_scored(dms_policy p) { return p == DMS_POLICY_TOVA || p == DMS_POLICY_H2O; }

int dms_kv_dtype_from_name(const char *name) {
    if (!name) return -1;
    if (!strcmp(name, "f32") || !strcmp(name, "fp32")) return DMS_F32;
    if (!strcmp(name, "f16") || !strcmp(name, "fp16")) return DMS_F16;
    if (!strcmp(name, "bf16")) return DMS_BF16;
    return -1;
}

void dms_kv_opts_default(dms_kv_opts *o) {
    memset(o, 0, sizeof *o);
    o->policy = DMS_POLICY_DMS;
    o->sinks = 4;
    o->max_seqs = 1;
    o->max_chunk = 256;
    o->dms_offset = NAN;
}

/* ---- the pool ---- */

static int pool_take(dms_kv_paged *kv) {
    if (kv->n_free == 0) { /* grow by a segment */
        const size_t blk_bytes = (size_t)kv->bs * kv->row_bytes;
        const size_t seg_floats = (blk_bytes * POOL_SEGMENT + sizeof(float) - 1) / sizeof(float);
        const int want = kv->n_blocks + POOL_SEGMENT;
        void **nk = realloc(kv->blk_k, sizeof(void *) * (size_t)want);
        if (nk) kv->blk_k = nk;
        void **nv = realloc(kv->blk_v, sizeof(void *) * (size_t)want);
        if (nv) kv->blk_v = nv;
        int *nf = realloc(kv->free_ids, sizeof(int) * (size_t)want);
        if (nf) kv->free_ids = nf;
        char *seg_k = (char *)dms_arena_f32(&kv->pool_arena, seg_floats);
        char *seg_v = (char *)dms_arena_f32(&kv->pool_arena, seg_floats);
        if (!nk || !nv || !nf || !seg_k || !seg_v) return -1;
        for (int i = 0; i < POOL_SEGMENT; i++) {
            kv->blk_k[kv->n_blocks + i] = seg_k + blk_bytes * i;
            kv->blk_v[kv->n_blocks + i] = seg_v + blk_bytes * i;
            kv->free_ids[kv->n_free++] = want - 1 - i; /* lowest id on top */
        }
        kv->n_blocks = want;
    }
    const int id = kv->free_ids[--kv->n_free];
    if (++kv->in_use > kv->peak) kv->peak = kv->in_use;
    return id;
}

static void pool_give(dms_kv_paged *kv, int id) {
    kv->free_ids[kv->n_free++] = id;
    kv->in_use--;
}

/* ---- lanes ---- */

static int lane_reserve(dms_kv_paged *kv, lane *ln, int need) {
    if (need > ln->cap) {
        int cap = ln->cap ? ln->cap : 64;
        while (cap < need) cap *= 2;
        int32_t *pos = realloc(ln->pos, sizeof(int32_t) * (size_t)cap);
        if (pos) ln->pos = pos;
        uint8_t *flag = realloc(ln->flag, (size_t)cap);
        if (flag) ln->flag = flag;
        float *score = realloc(ln->score, sizeof(float) * (size_t)cap);
        if (score) ln->score = score;
        if (!pos || !flag || !score) return -1;
        ln->cap = cap;
    }
    const int blocks = (need + kv->bs - 1) / kv->bs;
    if (blocks > ln->blk_cap) {
        int cap = ln->blk_cap ? ln->blk_cap : 8;
        while (cap < blocks) cap *= 2;
        void **k = realloc(ln->k_blk, sizeof(void *) * (size_t)cap);
        if (k) ln->k_blk = k;
        void **v = realloc(ln->v_blk, sizeof(void *) * (size_t)cap);
        if (v) ln->v_blk = v;
        int32_t *id = realloc(ln->blk_id, sizeof(int32_t) * (size_t)cap);
        if (id) ln->blk_id = id;
        if (!k || !v || !id) return -1;
        ln->blk_cap = cap;
    }
    return 0;
}

static void *slot_k(const dms_kv_paged *kv, const lane *ln, int s) {
    return (char *)ln->k_blk[s / kv->bs] + (size_t)(s % kv->bs) * kv->row_bytes;
}
static void *slot_v(const dms_kv_paged *kv, const lane *ln, int s) {
    return (char *)ln->v_blk[s / kv->bs] + (size_t)(s % kv->bs) * kv->row_bytes;
}

/* One fp32 row of the forward's K or V into a slot, in the cache dtype. */
static void slot_store(const dms_kv_paged *kv, void *dst, const float *src) {
    if (kv->o.kv_dtype == DMS_F32) dms_copy_f32(kv->be, dst, src, (size_t)kv->hd);
    else kv->be->narrow(kv->be->ctx, dst, kv->o.kv_dtype, src, (size_t)kv->hd);
}

/* A new slot for position p at the end of the lane (space reserved). */
static int lane_append(dms_kv_paged *kv, lane *ln, int p, int flag) {
    if (ln->n == ln->nblk * kv->bs) {
        const int id = pool_take(kv);
        if (id < 0) return -1;
        ln->blk_id[ln->nblk] = id;
        ln->k_blk[ln->nblk] = kv->blk_k[id];
        ln->v_blk[ln->nblk] = kv->blk_v[id];
        ln->nblk++;
    }
    const int s = ln->n++;
    ln->pos[s] = p;
    ln->flag[s] = (uint8_t)flag;
    ln->score[s] = 0.0f;
    if (ln->ring) ln->ring[p % kv->ring] = s;
    return s;
}

/* Removes slot s: the lane's last token moves into it, and a block left
 * empty goes back to the pool. */
static void lane_remove(dms_kv_paged *kv, lane *ln, int s) {
    const int last = ln->n - 1;
    if (ln->ring && ln->pos[s] >= ln->cursor) ln->ring[ln->pos[s] % kv->ring] = -1;
    if (s != last) {
        kv->be->copy(kv->be->ctx, slot_k(kv, ln, s), slot_k(kv, ln, last), kv->row_bytes);
        kv->be->copy(kv->be->ctx, slot_v(kv, ln, s), slot_v(kv, ln, last), kv->row_bytes);
        ln->pos[s] = ln->pos[last];
        ln->flag[s] = ln->flag[last];
        ln->score[s] = ln->score[last];
        if (ln->ring && ln->pos[s] >= ln->cursor) ln->ring[ln->pos[s] % kv->ring] = s;
    }
    ln->n--;
    if (ln->n == (ln->nblk - 1) * kv->bs) pool_give(kv, ln->blk_id[--ln->nblk]);
}

/* The DMS rule: every flagged token at a position <= bound leaves. */
static void lane_evict_upto(dms_kv_paged *kv, lane *ln, int64_t bound) {
    for (; ln->cursor <= bound; ln->cursor++) {
        const int s = ln->ring[ln->cursor % kv->ring];
        if (s >= 0 && ln->pos[s] == ln->cursor && ln->flag[s]) lane_remove(kv, ln, s);
    }
}

/* Policies that evict at every query: while over budget, the
 * lowest-scoring token leaves (h2o protects the newest budget/2); with a
 * budget per lane, window and sinks go this way too, the oldest token
 * leaving (never one of the first `sinks`). */
static void lane_evict_scored(dms_kv_paged *kv, lane *ln, int newest, int budget) {
    const dms_policy pol = kv->o.policy;
    const int oldest = pol == DMS_POLICY_WINDOW || pol == DMS_POLICY_SINKS;
    const int first = pol == DMS_POLICY_SINKS ? kv->o.sinks : 0;
    const int recent = pol == DMS_POLICY_H2O ? budget / 2 : 0;
    while (ln->n > budget) {
        int best = -1;
        for (int s = 0; s < ln->n; s++) {
            if (ln->pos[s] < first || newest - ln->pos[s] < recent) continue;
            if (best < 0 || (oldest ? ln->pos[s] < ln->pos[best] : ln->score[s] < ln->score[best])) best = s;
        }
        if (best < 0) break;
        lane_remove(kv, ln, best);
    }
}

int dms_kv_opts_per_query(const dms_kv_opts *o) { return dms_policy_scored(o->policy) || o->lane_budget; }

static void lane_release(dms_kv_paged *kv, lane *ln) {
    for (int b = 0; b < ln->nblk; b++) pool_give(kv, ln->blk_id[b]);
    free(ln->k_blk);
    free(ln->v_blk);
    free(ln->blk_id);
    free(ln->pos);
    free(ln->flag);
    free(ln->score);
    free(ln->ring);
    memset(ln, 0, sizeof *ln);
}

/* ---- the attention strategy ---- */

/* The decision of token i about its predecessor, in lane head h (a sink
 * token, dms_sink_tokens, is never flagged). */
static int decision(const dms_kv_paged *kv, int i, int h) {
    if (kv->tok_pos[i] - 1 < kv->m->cfg.dms.sink_tokens) return 0;
    const float z = kv->zhost[(size_t)i * kv->KV + (kv->per_layer ? 0 : h)];
    return kv->z_scale * z - kv->z_offset > 0.0f;
}

/* Tokens [i0, i1) of one sequence in layer l. */
static void attend_run(dms_kv_paged *kv, int l, dms_layer_acts *a, int i0, int i1) {
    const dms_backend *be = kv->be;
    const dms_config *c = &kv->m->cfg;
    seq *sq = &kv->seqs[kv->tok_seq[i0]];
    const int H = c->n_heads, hd = kv->hd, KV = kv->KV, n = i1 - i0;
    const int first = kv->tok_pos[i0], last = kv->tok_pos[i1 - 1];
    const dms_policy pol = kv->o.policy;
    const int rule = kv->window < INT_MAX;
    /* window and sinks with a budget per lane drop their oldest before the
     * query, so that it sees its budget, itself included, as under the rule */
    const int oldest_first = kv->lane_budget && (pol == DMS_POLICY_WINDOW || pol == DMS_POLICY_SINKS);
    for (int h = 0; h < KV; h++) {
        lane *ln = &sq->lanes[(size_t)l * KV + h];
        if (oldest_first) lane_evict_scored(kv, ln, first, kv->lane_budget[(size_t)l * KV + h] - n);
        if (lane_reserve(kv, ln, ln->n + n) != 0) {
            kv->failed = 1;
            return;
        }
        if (pol == DMS_POLICY_DMS && first >= 1) { /* token `first` decides about first - 1 */
            const int s = ln->ring[(first - 1) % kv->ring];
            if (s >= 0 && ln->pos[s] == first - 1) {
                ln->flag[s] = (uint8_t)decision(kv, i0, h);
                ln->flagged += ln->flag[s];
            }
        }
        if (rule) lane_evict_upto(kv, ln, (int64_t)first - kv->window - 1);
        for (int i = i0; i < i1; i++) {
            const int p = kv->tok_pos[i];
            const int flag = pol == DMS_POLICY_WINDOW || (pol == DMS_POLICY_SINKS && p >= kv->o.sinks);
            const int s = lane_append(kv, ln, p, flag);
            if (s < 0) {
                kv->failed = 1;
                return;
            }
            slot_store(kv, slot_k(kv, ln, s), a->k + ((size_t)i * KV + h) * hd);
            slot_store(kv, slot_v(kv, ln, s), a->v + ((size_t)i * KV + h) * hd);
            if (pol == DMS_POLICY_DMS && i > i0) {
                ln->flag[s - 1] = (uint8_t)decision(kv, i, h); /* the token before, appended just now */
                ln->flagged += ln->flag[s - 1];
            }
        }
        if (pol == DMS_POLICY_TOVA)
            for (int s = 0; s < ln->n; s++) ln->score[s] = 0.0f; /* TOVA: this query's attention only */
        kv->views[h] = (dms_kv_lane_view){(const void *const *)ln->k_blk, (const void *const *)ln->v_blk, ln->pos,
                                          rule ? ln->flag : NULL, dms_policy_scored(pol) ? ln->score : NULL, ln->n,
                                          kv->o.kv_dtype};
    }
    be->attention_paged(be->ctx, a->att + (size_t)i0 * H * hd, a->q + (size_t)i0 * H * hd, a->pos + i0, n,
                        kv->views, H, KV, hd, kv->bs, rule ? kv->window : INT_MAX, kv->scale);
    for (int h = 0; h < KV; h++) {
        lane *ln = &sq->lanes[(size_t)l * KV + h];
        if (rule) lane_evict_upto(kv, ln, (int64_t)last - kv->window - 1);
        else if (dms_policy_scored(pol))
            lane_evict_scored(kv, ln, last, kv->lane_budget ? kv->lane_budget[(size_t)l * KV + h] : kv->o.budget);
    }
}

static void paged_attend(dms_attn *self, const dms_model *m, int l, dms_layer_acts *a, int n) {
    dms_kv_paged *kv = (dms_kv_paged *)self;
    (void)m;
    if (kv->o.policy == DMS_POLICY_DMS) dms_download_f32(kv->be, kv->zhost, a->zraw, (size_t)n * kv->KV);
    for (int i0 = 0; i0 < n && !kv->failed;) {
        int i1 = i0 + 1;
        while (i1 < n && kv->tok_seq[i1] == kv->tok_seq[i0]) i1++;
        attend_run(kv, l, a, i0, i1);
        i0 = i1;
    }
}

/* ---- sequences and forward calls ---- */

dms_kv_paged *dms_kv_create(const dms_model *m, const dms_kv_opts *opts, dms_err *err) {
    const dms_config *c = &m->cfg;
    if (dms_backend_require_runtime(m->be, err) != 0) return NULL;
    dms_kv_opts o = *opts;
    if (o.policy == DMS_POLICY_DMS && (!m->has_heads || c->dms.disable_eviction)) {
        dms_errf(err, "%s: policy dms needs a DMS model (dms_* fields in config.json%s)", m->path,
                 c->dms.disable_eviction ? " and dms_disable_eviction false" : "");
        return NULL;
    }
    if (o.max_seqs < 1) o.max_seqs = 1;
    if (o.max_chunk < 1) o.max_chunk = 256;
    if (o.block_size <= 0) o.block_size = c->dms.present ? c->dms.block_size : 16;
    const int window = o.window > 0 ? o.window : c->dms.window;
    if (o.policy == DMS_POLICY_DMS && window <= o.block_size) {
        dms_errf(err, "%s: dms_window_size %d must be larger than the block size %d (dms_paged_attention_block_size)",
                 m->path, window, o.block_size);
        return NULL;
    }
    if (o.kv_dtype != DMS_F32 && o.kv_dtype != DMS_F16 && o.kv_dtype != DMS_BF16) {
        dms_errf(err, "KV cache dtype %s: only f32, f16 and bf16", dms_dtype_name(o.kv_dtype));
        return NULL;
    }
    if (o.kv_dtype != DMS_F32 && !m->be->narrow) {
        dms_errf(err, "backend '%s' keeps its KV cache in fp32 only (KV dtype %s asked)", m->be->name,
                 dms_dtype_name(o.kv_dtype));
        return NULL;
    }
    if (!isnan(o.dms_offset) && (o.policy != DMS_POLICY_DMS || !isfinite(o.dms_offset))) {
        dms_errf(err, "a decision offset (%g) applies to policy dms only, and must be finite", o.dms_offset);
        return NULL;
    }
    const int budgeted = o.policy != DMS_POLICY_DMS && o.policy != DMS_POLICY_FULL;
    const int lanes = c->n_layers * c->n_kv_heads, least = o.policy == DMS_POLICY_SINKS ? o.sinks + 1 : 1;
    if (o.lane_budget) {
        if (!budgeted) {
            dms_errf(err, "policy %s: budgets per lane apply to window, sinks, tova and h2o",
                     dms_policy_name(o.policy));
            return NULL;
        }
        for (int i = 0; i < lanes; i++)
            if (o.lane_budget[i] < least) {
                dms_errf(err, "policy %s: lane %d (layer %d, KV head %d) has a budget of %d tokens; at least %d",
                         dms_policy_name(o.policy), i, i / c->n_kv_heads, i % c->n_kv_heads, o.lane_budget[i], least);
                return NULL;
            }
    } else if (budgeted && o.budget < least) {
        dms_errf(err, "policy %s needs a budget of at least %d tokens per (layer, head) (got %d)",
                 dms_policy_name(o.policy), least, o.budget);
        return NULL;
    }
    dms_kv_paged *kv = calloc(1, sizeof *kv);
    if (!kv) {
        dms_errf(err, "out of memory");
        return NULL;
    }
    /* a DMS model runs its heads under every policy (the neuron variant zeroes its
     * channel even with eviction off, as NVIDIA's model does); only dms evicts by them */
    kv->attn = (dms_attn){m->has_heads, paged_attend, 0.0f};
    kv->m = m;
    kv->be = m->be;
    kv->o = o;
    kv->o.lane_budget = NULL; /* the caller's array may go: kv->o points at the copy, kv->lane_budget */
    if (o.lane_budget) {
        kv->lane_budget = malloc(sizeof(int) * (size_t)lanes);
        if (!kv->lane_budget) {
            free(kv);
            dms_errf(err, "out of memory");
            return NULL;
        }
        memcpy(kv->lane_budget, o.lane_budget, sizeof(int) * (size_t)lanes);
        kv->o.lane_budget = kv->lane_budget;
    }
    kv->L = c->n_layers;
    kv->KV = c->n_kv_heads;
    kv->hd = c->head_dim;
    kv->bs = o.block_size;
    kv->row_bytes = dms_dtype_bytes(o.kv_dtype, (size_t)kv->hd);
    kv->window = o.lane_budget                   ? INT_MAX /* evicts per query (lane_evict_scored) */
                 : o.policy == DMS_POLICY_DMS    ? window
                 : o.policy == DMS_POLICY_WINDOW ? o.budget - 1
                 : o.policy == DMS_POLICY_SINKS  ? o.budget - o.sinks - 1
                                                 : INT_MAX;
    kv->ring = (kv->window < INT_MAX / 2 ? kv->window : 0) + o.max_chunk + 2;
    kv->per_layer = c->dms.alpha_per_layer;
    kv->scale = 1.0f / sqrtf((float)kv->hd);
    kv->z_scale = c->dms.alpha_scale;
    kv->z_offset = isnan(o.dms_offset) ? c->dms.alpha_offset : o.dms_offset;
    dms_arena_init(&kv->pool_arena, m->be);
    const int max_tok = o.max_chunk > o.max_seqs ? o.max_chunk : o.max_seqs;
    kv->seqs = calloc((size_t)o.max_seqs, sizeof(seq));
    kv->tok_seq = malloc(sizeof(int) * (size_t)max_tok);
    kv->tok_pos = malloc(sizeof(int) * (size_t)max_tok);
    kv->zhost = malloc(sizeof(float) * (size_t)max_tok * kv->KV);
    kv->views = malloc(sizeof(dms_kv_lane_view) * (size_t)kv->KV);
    if (!kv->seqs || !kv->tok_seq || !kv->tok_pos || !kv->zhost || !kv->views) {
        dms_kv_free(kv);
        dms_errf(err, "out of memory");
        return NULL;
    }
    if (dms_forward_state_init(&kv->fs, m, max_tok, err) != 0) {
        dms_kv_free(kv);
        return NULL;
    }
    return kv;
}

void dms_kv_free(dms_kv_paged *kv) {
    if (!kv) return;
    for (int i = 0; kv->seqs && i < kv->o.max_seqs; i++)
        if (kv->seqs[i].active) dms_kv_finish(kv, i);
    dms_forward_state_free(&kv->fs);
    if (kv->pool_arena.be) dms_arena_free(&kv->pool_arena);
    free(kv->blk_k);
    free(kv->blk_v);
    free(kv->free_ids);
    free(kv->seqs);
    free(kv->tok_seq);
    free(kv->tok_pos);
    free(kv->zhost);
    free(kv->views);
    free(kv->lane_budget);
    free(kv);
}

int dms_kv_admit(dms_kv_paged *kv, dms_err *err) {
    for (int i = 0; i < kv->o.max_seqs; i++) {
        seq *s = &kv->seqs[i];
        if (s->active) continue;
        memset(s, 0, sizeof *s);
        s->lanes = calloc((size_t)kv->L * kv->KV, sizeof(lane));
        const int rule = kv->window < INT_MAX;
        for (int j = 0; s->lanes && rule && j < kv->L * kv->KV; j++) {
            s->lanes[j].ring = malloc(sizeof(int32_t) * (size_t)kv->ring);
            if (!s->lanes[j].ring) {
                for (int k = 0; k < j; k++) free(s->lanes[k].ring);
                free(s->lanes);
                s->lanes = NULL;
                break;
            }
            for (int r = 0; r < kv->ring; r++) s->lanes[j].ring[r] = -1;
        }
        if (!s->lanes) return dms_errf(err, "out of memory for a new sequence");
        s->active = 1;
        return i;
    }
    return dms_errf(err, "all %d sequences are active (finish one first)", kv->o.max_seqs);
}

void dms_kv_finish(dms_kv_paged *kv, int id) {
    seq *s = &kv->seqs[id];
    if (!s->active) return;
    for (int j = 0; j < kv->L * kv->KV; j++) lane_release(kv, &s->lanes[j]);
    free(s->lanes);
    memset(s, 0, sizeof *s);
}

static double held_mean(const dms_kv_paged *kv, const seq *s) {
    double t = 0;
    for (int j = 0; j < kv->L * kv->KV; j++) t += s->lanes[j].n;
    return t / (kv->L * kv->KV);
}

/* One forward call over tokens already described in tok_seq / tok_pos. */
static int run_tokens(dms_kv_paged *kv, const int32_t *ids, int n, float *logits, int last_only, dms_err *err) {
    dms_model_forward_tokens(kv->m, &kv->attn, &kv->fs, ids, kv->tok_pos, n, logits, last_only);
    char msg[256];
    if (kv->be->status(kv->be->ctx, msg, sizeof msg) != 0) return dms_errf(err, "forward: %s", msg);
    if (kv->failed) return dms_errf(err, "KV cache: out of memory");
    for (int i = 0; i < n; i++) { /* sequences advance, statistics per token */
        seq *s = &kv->seqs[kv->tok_seq[i]];
        if (i + 1 < n && kv->tok_seq[i + 1] == kv->tok_seq[i]) continue;
        const int run = kv->tok_pos[i] + 1 - s->len;
        s->len = kv->tok_pos[i] + 1;
        const double h = held_mean(kv, s);
        s->held_time_sum += h * run;
        if (h > s->held_peak) s->held_peak = h;
    }
    return 0;
}

static int check_ids(const dms_kv_paged *kv, const int32_t *ids, int n, dms_err *err) {
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= kv->m->cfg.vocab)
            return dms_errf(err, "token id %d out of range [0, %d)", ids[i], kv->m->cfg.vocab);
    return 0;
}

static int check_seq(const dms_kv_paged *kv, int id, dms_err *err) {
    if (id < 0 || id >= kv->o.max_seqs || !kv->seqs[id].active) return dms_errf(err, "sequence %d is not active", id);
    if (kv->seqs[id].len >= kv->m->cfg.max_pos)
        return dms_errf(err, "sequence %d reached the model's context of %d tokens", id, kv->m->cfg.max_pos);
    return 0;
}

int dms_kv_prefill(dms_kv_paged *kv, int id, const int32_t *ids, int n, float *logits, int all, dms_err *err) {
    if (n <= 0) return dms_errf(err, "prefill: no tokens");
    if (check_seq(kv, id, err) || check_ids(kv, ids, n, err)) return -1;
    if (kv->seqs[id].len + n > kv->m->cfg.max_pos)
        return dms_errf(err, "prefill: %d tokens would pass the model's context of %d", n, kv->m->cfg.max_pos);
    /* evicting at every query, the prompt goes token by token */
    const int chunk = dms_kv_opts_per_query(&kv->o) ? 1 : kv->o.max_chunk;
    for (int done = 0; done < n;) {
        const int c = n - done < chunk ? n - done : chunk;
        for (int i = 0; i < c; i++) {
            kv->tok_seq[i] = id;
            kv->tok_pos[i] = kv->seqs[id].len + i;
        }
        float *out = all ? logits + (size_t)done * kv->m->cfg.vocab : logits;
        if (run_tokens(kv, ids + done, c, out, !all, err) != 0) return -1;
        done += c;
    }
    return 0;
}

int dms_kv_decode(dms_kv_paged *kv, const int *seqs, const int32_t *ids, int n, float *logits, dms_err *err) {
    if (n <= 0 || n > kv->o.max_seqs) return dms_errf(err, "decode: %d sequences (1..%d)", n, kv->o.max_seqs);
    if (check_ids(kv, ids, n, err)) return -1;
    for (int i = 0; i < n; i++) {
        if (check_seq(kv, seqs[i], err)) return -1;
        for (int j = 0; j < i; j++)
            if (seqs[j] == seqs[i]) return dms_errf(err, "decode: sequence %d given twice", seqs[i]);
        kv->tok_seq[i] = seqs[i];
        kv->tok_pos[i] = kv->seqs[seqs[i]].len;
    }
    return run_tokens(kv, ids, n, logits, 0, err);
}

void dms_kv_seq_stats(const dms_kv_paged *kv, int id, dms_kv_stats *st) {
    memset(st, 0, sizeof *st);
    const seq *s = &kv->seqs[id];
    if (!s->active) return;
    const size_t token_bytes = 2 * kv->row_bytes;
    int64_t flagged = 0;
    for (int j = 0; j < kv->L * kv->KV; j++) {
        st->blocks_held += s->lanes[j].nblk;
        flagged += s->lanes[j].flagged;
    }
    st->seen = s->len;
    st->held_mean = held_mean(kv, s);
    st->held_time_mean = s->len ? s->held_time_sum / s->len : 0;
    st->held_peak = s->held_peak;
    st->kv_cr = st->held_mean > 0 ? s->len / st->held_mean : 0;
    const double decisions = (double)(s->len > 1 ? s->len - 1 : 0) * kv->L * kv->KV;
    st->decision_cr = decisions > 0 && flagged < decisions ? 1.0 / (1.0 - flagged / decisions) : 1.0;
    st->bytes_held = (size_t)st->blocks_held * kv->bs * token_bytes;
    st->bytes_vanilla = (size_t)s->len * kv->L * kv->KV * token_bytes;
}

int dms_kv_lane_len(const dms_kv_paged *kv, int id, int layer, int head) {
    return kv->seqs[id].lanes[(size_t)layer * kv->KV + head].n;
}
int dms_kv_lane_holds(const dms_kv_paged *kv, int id, int layer, int head, int pos) {
    const lane *ln = &kv->seqs[id].lanes[(size_t)layer * kv->KV + head];
    for (int s = 0; s < ln->n; s++)
        if (ln->pos[s] == pos) return 1;
    return 0;
}
int dms_kv_seq_len(const dms_kv_paged *kv, int id) { return kv->seqs[id].len; }
int dms_kv_blocks_in_use(const dms_kv_paged *kv) { return kv->in_use; }
int dms_kv_blocks_peak(const dms_kv_paged *kv) { return kv->peak; }
int dms_kv_block_size(const dms_kv_paged *kv) { return kv->bs; }
int dms_kv_window(const dms_kv_paged *kv) { return kv->window; }
