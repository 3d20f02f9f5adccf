/* kv_dense.c - the plain KV cache (kv_dense.h): appends each chunk's keys
 * and values and runs causal attention over everything stored. */
#include "runtime/kv_dense.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/layer.h"

static void dense_attend(dms_attn *self, const dms_model *m, int l, dms_layer_acts *a, int n) {
    dms_kv_dense *c = (dms_kv_dense *)self;
    const dms_backend *be = m->be;
    const dms_config *cf = &m->cfg;
    const int pos0 = c->base.len;
    dms_copy_f32(be, c->k[l] + (size_t)pos0 * c->row, a->k, (size_t)n * c->row);
    dms_copy_f32(be, c->v[l] + (size_t)pos0 * c->row, a->v, (size_t)n * c->row);
    be->attention(be->ctx, a->att, a->q, c->k[l], c->v[l], a->pos, n, pos0 + n, cf->n_heads, cf->n_kv_heads,
                  cf->head_dim, 1.0f / sqrtf((float)cf->head_dim));
}

int dms_kv_dense_init(dms_kv_dense *c, const dms_model *m, int max_seq, dms_err *err) {
    memset(c, 0, sizeof *c);
    c->base.attn.attend = dense_attend;
    c->base.max_seq = max_seq;
    c->n_layers = m->cfg.n_layers;
    c->row = (size_t)m->cfg.n_kv_heads * m->cfg.head_dim;
    dms_arena_init(&c->arena, m->be);
    c->k = calloc((size_t)c->n_layers, sizeof(float *));
    c->v = calloc((size_t)c->n_layers, sizeof(float *));
    if (!c->k || !c->v) {
        dms_kv_dense_free(c);
        return dms_errf(err, "KV cache: out of memory");
    }
    for (int l = 0; l < c->n_layers; l++) {
        c->k[l] = dms_arena_f32(&c->arena, c->row * (size_t)max_seq);
        c->v[l] = dms_arena_f32(&c->arena, c->row * (size_t)max_seq);
    }
    char what[64];
    snprintf(what, sizeof what, "KV cache of %d tokens", max_seq);
    if (dms_arena_check(&c->arena, what, err) != 0) {
        dms_kv_dense_free(c);
        return -1;
    }
    return 0;
}

void dms_kv_dense_free(dms_kv_dense *c) {
    if (c->arena.be) dms_arena_free(&c->arena);
    free(c->k);
    free(c->v);
    memset(c, 0, sizeof *c);
}

size_t dms_kv_dense_bytes_used(const dms_kv_dense *c) {
    return dms_dtype_bytes(DMS_F32, 2 * (size_t)c->n_layers * c->row * (size_t)c->base.len);
}

size_t dms_kv_dense_bytes_reserved(const dms_kv_dense *c) {
    return dms_dtype_bytes(DMS_F32, 2 * (size_t)c->n_layers * c->row * (size_t)c->base.max_seq);
}
