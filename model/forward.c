/* forward.c - the incremental forward pass of dms_model over a KV cache:
 * embed, every layer (model/layer.c) with the cache as its attention
 * strategy, the final norm and the LM head. Ops go through m->be only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/layer.h"

int dms_forward_state_init(dms_forward_state *s, const dms_model *m, int max_tokens, dms_err *err) {
    memset(s, 0, sizeof *s);
    const dms_config *c = &m->cfg;
    const size_t T = (size_t)max_tokens;
    s->max_tokens = max_tokens;
    dms_arena_init(&s->arena, m->be);
    s->acts = malloc(sizeof *s->acts);
    if (!s->acts) return dms_errf(err, "forward: out of memory");
    dms_layer_acts_init(s->acts, &s->arena, m, max_tokens, 0);
    s->x = dms_arena_f32(&s->arena, T * c->hidden);
    s->xn = dms_arena_f32(&s->arena, T * c->hidden);
    s->logits = dms_arena_f32(&s->arena, T * c->vocab);
    s->ids = dms_arena_i32(&s->arena, T);
    char what[64];
    snprintf(what, sizeof what, "forward state for %d tokens", max_tokens);
    if (dms_arena_check(&s->arena, what, err) != 0) {
        dms_forward_state_free(s);
        return -1;
    }
    return 0;
}

void dms_forward_state_free(dms_forward_state *s) {
    if (s->arena.be) dms_arena_free(&s->arena);
    free(s->acts);
    memset(s, 0, sizeof *s);
}

void dms_model_forward_tokens(const dms_model *m, dms_attn *attn, dms_forward_state *s, const int32_t *ids,
                              const int32_t *pos, int n, float *logits, int last_only) {
    const dms_backend *be = m->be;
    const dms_config *c = &m->cfg;
    const int d = c->hidden;
    dms_upload_i32(be, s->ids, ids, (size_t)n);
    dms_upload_i32(be, s->acts->pos, pos, (size_t)n);
    be->embedding(be->ctx, s->x, &m->embed, s->ids, n);
    for (int l = 0; l < c->n_layers; l++) dms_layer_forward(m, l, s->x, s->x, s->acts, n, attn);
    const float *head_in = last_only ? s->x + (size_t)(n - 1) * d : s->x;
    const int rows = last_only ? 1 : n;
    be->rmsnorm(be->ctx, s->xn, head_in, m->final_norm, rows, d, c->rms_eps);
    be->matmul(be->ctx, s->logits, s->xn, &m->lm_head, NULL, rows);
    dms_download_f32(be, logits, s->logits, (size_t)rows * c->vocab);
}

int dms_model_forward(const dms_model *m, dms_kv_cache *cache, dms_forward_state *s, const int32_t *ids, int n,
                      float *logits, int last_only, dms_err *err) {
    if (n <= 0) return dms_errf(err, "forward: no tokens");
    if (cache->len + n > cache->max_seq)
        return dms_errf(err, "forward: %d tokens exceed the KV cache of %d (already holding %d)", n, cache->max_seq,
                        cache->len);
    if (!m->embed.data) return dms_errf(err, "forward: model loaded without weights");
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab)
            return dms_errf(err, "forward: token id %d out of range [0, %d)", ids[i], m->cfg.vocab);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)s->max_tokens);
    if (!pos) return dms_errf(err, "forward: out of memory");
    for (int done = 0; done < n;) {
        const int chunk = n - done < s->max_tokens ? n - done : s->max_tokens;
        for (int i = 0; i < chunk; i++) pos[i] = cache->len + i;
        /* With last_only, every chunk writes its last row to logits and
         * the final chunk's is the one left. */
        float *out = last_only ? logits : logits + (size_t)done * m->cfg.vocab;
        dms_model_forward_tokens(m, &cache->attn, s, ids + done, pos, chunk, out, last_only);
        cache->len += chunk;
        done += chunk;
    }
    free(pos);
    char msg[256];
    if (m->be->status(m->be->ctx, msg, sizeof msg) != 0) return dms_errf(err, "forward: %s", msg);
    return 0;
}
