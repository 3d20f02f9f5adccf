/* eval_gen.c - batched sampling for the generation tasks (eval.h): many
 * requests through one paged runtime, up to `batch` sequences decoded
 * together by dms_kv_decode, a finished sequence's slot refilled at once
 * (continuous batching), each request with its own seeded sampler
 * (runtime/sampler.h, plus a min-p filter in front of it). It also counts
 * the paper's memory-read budget: at every decode step, the KV entries the
 * new token's query reads, summed over layers and KV heads; and, once a
 * prompt is read, which lanes still hold the positions the request watches
 * (the needle of niah). */
#include "runtime/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/sampler.h"
#include "train/progress.h"

typedef struct slot {
    int active, req, seq;
    int fed;              /* prompt tokens fed so far */
    int32_t pending;      /* the next token to feed (a sampled one) */
    int32_t *out;
    int n_out, max_new;
    double lanes_prev;    /* live tokens summed over lanes after the last call */
    int steps;
    double reads, reads_vanilla, t0;
    double watch_lanes, watch_held; /* dms_eval_output's, measured when the prompt is read */
    dms_sampler sampler;
    int sampler_ok;
} slot;

double dms_eval_lanes_held(const dms_kv_paged *kv, const dms_model *m, int seq) {
    double t = 0;
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int h = 0; h < m->cfg.n_kv_heads; h++) t += dms_kv_lane_len(kv, seq, l, h);
    return t;
}

/* min-p: drop tokens whose probability is below min_p times the top one's
 * (after temperature): logit < max + T log(min_p). */
static void min_p_filter(float *logits, int V, const dms_eval_sampling *s) {
    if (s->temperature <= 0 || s->min_p <= 0) return;
    const float mx = logits[dms_argmax(logits, V)], thr = mx + s->temperature * logf(s->min_p);
    for (int i = 0; i < V; i++)
        if (logits[i] < thr) logits[i] = -INFINITY;
}

typedef struct engine {
    const dms_model *m;
    dms_kv_paged *kv;
    const dms_eval_sampling *s;
    const dms_eval_request *req;
    dms_eval_gen_cb cb;
    void *ctx;
    dms_eval_progress *progress;
    int lanes;
} engine;

static int finish(engine *e, slot *sl, int stopped, dms_err *err) {
    dms_eval_output o;
    memset(&o, 0, sizeof o);
    o.ids = sl->out;
    o.n = sl->n_out;
    o.max_new = sl->max_new;
    o.stopped = stopped;
    o.hit_limit = !stopped;
    o.prompt_tokens = e->req[sl->req].n_prompt;
    dms_kv_seq_stats(e->kv, sl->seq, &o.kv);
    o.decode_steps = sl->steps;
    o.reads = sl->reads;
    o.reads_vanilla = sl->reads_vanilla;
    o.seconds = dms_now_s() - sl->t0;
    o.watch_lanes = sl->watch_lanes;
    o.watch_held = sl->watch_held;
    dms_kv_finish(e->kv, sl->seq);
    sl->active = 0;
    return e->cb ? e->cb(sl->req, &o, e->ctx, err) : 0;
}

/* The whole prompt is in the cache: which lanes still hold the watched positions. */
static void watch(engine *e, slot *sl) {
    const dms_eval_request *q = &e->req[sl->req];
    sl->watch_lanes = sl->watch_held = -1;
    if (!q->watch || q->n_watch <= 0) return;
    int all = 0, held = 0;
    for (int l = 0; l < e->m->cfg.n_layers; l++)
        for (int h = 0; h < e->m->cfg.n_kv_heads; h++) {
            int k = 0;
            for (int i = 0; i < q->n_watch; i++) k += dms_kv_lane_holds(e->kv, sl->seq, l, h, q->watch[i]);
            held += k;
            all += k == q->n_watch;
        }
    sl->watch_lanes = (double)all / e->lanes;
    sl->watch_held = (double)held / ((double)e->lanes * q->n_watch);
}

/* A token was sampled for the slot: keep it, and end the sequence on a
 * stop token or when it has its tokens. */
static int take(engine *e, slot *sl, float *logits, dms_err *err) {
    min_p_filter(logits, e->m->cfg.vocab, e->s);
    const int32_t t = dms_sample(&sl->sampler, logits);
    sl->out[sl->n_out++] = t;
    dms_eval_progress_tokens(e->progress, 1);
    if (e->m->tok && dms_tokenizer_is_stop(e->m->tok, t)) return finish(e, sl, 1, err);
    if (sl->n_out >= sl->max_new) return finish(e, sl, 0, err);
    sl->pending = t;
    return 0;
}

static int admit(engine *e, slot *sl, int r, float *logits, int scored, dms_err *err) {
    const dms_eval_request *q = &e->req[r];
    const int ctx = e->m->cfg.max_pos;
    if (q->n_prompt <= 0) return dms_errf(err, "request %d: empty prompt", r);
    if (q->n_prompt >= ctx)
        return dms_errf(err, "request %d: a prompt of %d tokens fills the model's context of %d", r, q->n_prompt, ctx);
    sl->max_new = q->max_new < ctx - q->n_prompt ? q->max_new : ctx - q->n_prompt;
    if (sl->max_new < 1) sl->max_new = 1;
    int32_t *out = realloc(sl->out, sizeof(int32_t) * (size_t)sl->max_new);
    if (!out) return dms_errf(err, "out of memory for %d new tokens", sl->max_new);
    sl->out = out;
    sl->seq = dms_kv_admit(e->kv, err);
    if (sl->seq < 0) return -1;
    sl->active = 1;
    sl->req = r;
    sl->fed = 0;
    sl->n_out = 0;
    sl->steps = 0;
    sl->reads = sl->reads_vanilla = 0;
    sl->lanes_prev = 0;
    sl->t0 = dms_now_s();
    sl->sampler.rng = q->seed;
    if (scored) return 0; /* the prompt goes through the decode steps */
    if (dms_kv_prefill(e->kv, sl->seq, q->prompt, q->n_prompt, logits, 0, err) != 0) return -1;
    dms_eval_progress_tokens(e->progress, q->n_prompt);
    sl->fed = q->n_prompt;
    sl->lanes_prev = dms_eval_lanes_held(e->kv, e->m, sl->seq);
    watch(e, sl);
    return take(e, sl, logits, err);
}

int dms_eval_generate(const dms_model *m, const dms_kv_opts *kvo, const dms_eval_sampling *s, int batch,
                      const dms_eval_request *req, int n, dms_eval_gen_cb cb, void *ctx,
                      dms_eval_progress *progress, dms_err *err) {
    if (n <= 0) return 0;
    if (batch < 1) batch = 1;
    if (batch > n) batch = n;
    dms_kv_opts o = *kvo;
    o.max_seqs = batch;
    engine e = {m, NULL, s, req, cb, ctx, progress, m->cfg.n_layers * m->cfg.n_kv_heads};
    e.kv = dms_kv_create(m, &o, err);
    if (!e.kv) return -1;
    const int V = m->cfg.vocab, scored = dms_policy_scored(o.policy);
    slot *slots = calloc((size_t)batch, sizeof(slot));
    float *logits = malloc(sizeof(float) * (size_t)V * (size_t)batch);
    int *seqs = malloc(sizeof(int) * (size_t)batch), *who = malloc(sizeof(int) * (size_t)batch);
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)batch);
    int rc = slots && logits && seqs && who && toks ? 0 : dms_errf(err, "out of memory");
    for (int i = 0; rc == 0 && i < batch; i++) {
        if (dms_sampler_init(&slots[i].sampler, V, s->temperature, s->top_k, s->top_p, 0) != 0)
            rc = dms_errf(err, "out of memory");
        else slots[i].sampler_ok = 1;
    }
    int next = 0;
    while (rc == 0) {
        for (int i = 0; rc == 0 && i < batch; i++) /* fill free slots */
            while (rc == 0 && !slots[i].active && next < n) rc = admit(&e, &slots[i], next++, logits, scored, err);
        if (rc != 0) break;
        int k = 0;
        for (int i = 0; i < batch; i++) {
            slot *sl = &slots[i];
            if (!sl->active) continue;
            const dms_eval_request *q = &req[sl->req];
            who[k] = i;
            seqs[k] = sl->seq;
            toks[k] = sl->fed < q->n_prompt ? q->prompt[sl->fed] : sl->pending;
            k++;
        }
        if (k == 0) break;
        if (dms_kv_decode(e.kv, seqs, toks, k, logits, err) != 0) {
            rc = -1;
            break;
        }
        for (int j = 0; rc == 0 && j < k; j++) {
            slot *sl = &slots[who[j]];
            const dms_eval_request *q = &req[sl->req];
            float *row = logits + (size_t)j * V;
            const double now = dms_eval_lanes_held(e.kv, m, sl->seq);
            if (sl->fed < q->n_prompt) { /* a prompt token (scored policies) */
                sl->fed++;
                sl->lanes_prev = now;
                dms_eval_progress_tokens(progress, 1);
                if (sl->fed == q->n_prompt) {
                    watch(&e, sl);
                    rc = take(&e, sl, row, err);
                }
                continue;
            }
            /* a generated token at position p read p + 1 entries per lane in a
             * vanilla cache; scored policies evict after attending, so their
             * query read what the lane held before plus itself */
            const int p = dms_kv_seq_len(e.kv, sl->seq) - 1;
            sl->steps++;
            sl->reads += scored ? sl->lanes_prev + e.lanes : now;
            sl->reads_vanilla += (double)(p + 1) * e.lanes;
            sl->lanes_prev = now;
            rc = take(&e, sl, row, err);
        }
    }
    for (int i = 0; slots && i < batch; i++) {
        if (slots[i].active) dms_kv_finish(e.kv, slots[i].seq);
        if (slots[i].sampler_ok) dms_sampler_free(&slots[i].sampler);
        free(slots[i].out);
    }
    free(slots);
    free(logits);
    free(seqs);
    free(who);
    free(toks);
    dms_kv_free(e.kv);
    return rc;
}
