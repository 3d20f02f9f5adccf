/* forward.c - the incremental forward pass of dms_model over a plain KV
 * cache: embed, then per layer RMSNorm -> q/k/v (+bias, +q/k norm) -> RoPE
 * -> causal GQA attention -> o_proj -> residual -> RMSNorm -> SwiGLU MLP ->
 * residual, then the final norm and the LM head. Ops go through m->be only. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

int dms_kv_cache_init(dms_kv_cache *c, const dms_model *m, int max_seq, dms_err *err) {
    memset(c, 0, sizeof *c);
    const size_t row = (size_t)m->cfg.n_kv_heads * m->cfg.head_dim;
    c->max_seq = max_seq;
    c->n_layers = m->cfg.n_layers;
    c->k = calloc((size_t)c->n_layers, sizeof(float *));
    c->v = calloc((size_t)c->n_layers, sizeof(float *));
    for (int l = 0; l < c->n_layers; l++) {
        c->k[l] = m->be->alloc(m->be->ctx, sizeof(float) * row * (size_t)max_seq);
        c->v[l] = m->be->alloc(m->be->ctx, sizeof(float) * row * (size_t)max_seq);
        if (!c->k[l] || !c->v[l]) {
            dms_kv_cache_free(c, m);
            return dms_errf(err, "KV cache: out of memory for %d tokens", max_seq);
        }
    }
    return 0;
}

void dms_kv_cache_free(dms_kv_cache *c, const dms_model *m) {
    for (int l = 0; l < c->n_layers; l++) {
        if (c->k) m->be->free(m->be->ctx, c->k[l]);
        if (c->v) m->be->free(m->be->ctx, c->v[l]);
    }
    free(c->k);
    free(c->v);
    memset(c, 0, sizeof *c);
}

int dms_forward_state_init(dms_forward_state *s, const dms_model *m, int max_tokens, dms_err *err) {
    memset(s, 0, sizeof *s);
    const dms_config *c = &m->cfg;
    const size_t T = (size_t)max_tokens, qd = (size_t)c->n_heads * c->head_dim,
                 kvd = (size_t)c->n_kv_heads * c->head_dim;
    const size_t wide = (size_t)c->intermediate > qd ? (size_t)c->intermediate : qd;
    s->max_tokens = max_tokens;
    s->x = m->be->alloc(m->be->ctx, sizeof(float) * T * c->hidden);
    s->xn = m->be->alloc(m->be->ctx, sizeof(float) * T * (wide > (size_t)c->hidden ? wide : (size_t)c->hidden));
    s->q = m->be->alloc(m->be->ctx, sizeof(float) * T * qd);
    s->k = m->be->alloc(m->be->ctx, sizeof(float) * T * kvd);
    s->v = m->be->alloc(m->be->ctx, sizeof(float) * T * kvd);
    s->att = m->be->alloc(m->be->ctx, sizeof(float) * T * qd);
    s->gate = m->be->alloc(m->be->ctx, sizeof(float) * T * c->intermediate);
    s->up = m->be->alloc(m->be->ctx, sizeof(float) * T * c->intermediate);
    s->logits = m->be->alloc(m->be->ctx, sizeof(float) * T * c->vocab);
    s->ids = m->be->alloc(m->be->ctx, sizeof(int32_t) * T);
    s->pos = m->be->alloc(m->be->ctx, sizeof(int32_t) * T);
    if (!s->x || !s->xn || !s->q || !s->k || !s->v || !s->att || !s->gate || !s->up || !s->logits ||
        !s->ids || !s->pos) {
        dms_forward_state_free(s, m);
        return dms_errf(err, "forward: out of memory for %d tokens", max_tokens);
    }
    return 0;
}

void dms_forward_state_free(dms_forward_state *s, const dms_model *m) {
    void *ptrs[] = {s->x, s->xn, s->q, s->k, s->v, s->att, s->gate, s->up, s->logits, s->ids, s->pos};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
        if (ptrs[i]) m->be->free(m->be->ctx, ptrs[i]);
    memset(s, 0, sizeof *s);
}

/* One chunk of n <= s->max_tokens tokens. */
static void forward_chunk(const dms_model *m, dms_kv_cache *cache, dms_forward_state *s, int n,
                          float *logits, int last_only) {
    const dms_backend *be = m->be;
    const dms_config *c = &m->cfg;
    const int d = c->hidden, hd = c->head_dim, H = c->n_heads, KV = c->n_kv_heads;
    const size_t kvd = (size_t)KV * hd;
    const int pos0 = cache->len;
    const float scale = 1.0f / sqrtf((float)hd);

    be->embedding(be->ctx, s->x, &m->embed, s->ids, n);
    for (int l = 0; l < c->n_layers; l++) {
        const dms_layer *L = &m->layers[l];
        be->rmsnorm(be->ctx, s->xn, s->x, L->attn_norm, n, d, c->rms_eps);
        be->matmul(be->ctx, s->q, s->xn, &L->wq, L->bq, n);
        be->matmul(be->ctx, s->k, s->xn, &L->wk, L->bk, n);
        be->matmul(be->ctx, s->v, s->xn, &L->wv, L->bv, n);
        if (c->qk_norm) {
            be->rmsnorm(be->ctx, s->q, s->q, L->q_norm, n * H, hd, c->rms_eps);
            be->rmsnorm(be->ctx, s->k, s->k, L->k_norm, n * KV, hd, c->rms_eps);
        }
        be->rope(be->ctx, s->q, s->pos, m->inv_freq, n, H, hd);
        be->rope(be->ctx, s->k, s->pos, m->inv_freq, n, KV, hd);
        be->copy(be->ctx, cache->k[l] + (size_t)pos0 * kvd, s->k, sizeof(float) * n * kvd);
        be->copy(be->ctx, cache->v[l] + (size_t)pos0 * kvd, s->v, sizeof(float) * n * kvd);
        be->attention(be->ctx, s->att, s->q, cache->k[l], cache->v[l], s->pos, n, pos0 + n, H, KV, hd, scale);
        be->matmul(be->ctx, s->xn, s->att, &L->wo, NULL, n);
        be->add(be->ctx, s->x, s->xn, (size_t)n * d);
        be->rmsnorm(be->ctx, s->xn, s->x, L->ffn_norm, n, d, c->rms_eps);
        be->matmul(be->ctx, s->gate, s->xn, &L->w_gate, NULL, n);
        be->matmul(be->ctx, s->up, s->xn, &L->w_up, NULL, n);
        be->swiglu(be->ctx, s->gate, s->gate, s->up, (size_t)n * c->intermediate);
        be->matmul(be->ctx, s->xn, s->gate, &L->w_down, NULL, n);
        be->add(be->ctx, s->x, s->xn, (size_t)n * d);
    }
    const float *head_in = s->x;
    int rows = n;
    if (last_only) {
        head_in = s->x + (size_t)(n - 1) * d;
        rows = 1;
    }
    be->rmsnorm(be->ctx, s->xn, head_in, m->final_norm, rows, d, c->rms_eps);
    be->matmul(be->ctx, s->logits, s->xn, &m->lm_head, NULL, rows);
    be->download(be->ctx, logits, s->logits, sizeof(float) * (size_t)rows * c->vocab);
    cache->len += n;
}

int dms_model_forward(const dms_model *m, dms_kv_cache *cache, dms_forward_state *s,
                      const int32_t *ids, int n, float *logits, int last_only, dms_err *err) {
    if (n <= 0) return dms_errf(err, "forward: no tokens");
    if (cache->len + n > cache->max_seq)
        return dms_errf(err, "forward: %d tokens exceed the KV cache of %d (already holding %d)", n,
                        cache->max_seq, cache->len);
    if (!m->embed.data) return dms_errf(err, "forward: model loaded without weights");
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)s->max_tokens);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab) {
            free(pos);
            return dms_errf(err, "forward: token id %d out of range [0, %d)", ids[i], m->cfg.vocab);
        }
    for (int done = 0; done < n;) {
        int chunk = n - done < s->max_tokens ? n - done : s->max_tokens;
        for (int i = 0; i < chunk; i++) pos[i] = cache->len + i;
        m->be->upload(m->be->ctx, s->ids, ids + done, sizeof(int32_t) * chunk);
        m->be->upload(m->be->ctx, s->pos, pos, sizeof(int32_t) * chunk);
        /* With last_only, every chunk writes its last row to logits and
         * the final chunk's is the one left. */
        float *out = last_only ? logits : logits + (size_t)done * m->cfg.vocab;
        forward_chunk(m, cache, s, chunk, out, last_only);
        done += chunk;
    }
    free(pos);
    return 0;
}
