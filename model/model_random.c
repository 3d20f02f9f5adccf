/* model_random.c - random weights at a config's real shapes (model_random.h).
 * The same tensors, shapes and dtypes as model_load.c's load_weights, drawn
 * from the counter RNG in chunks so that a multi-GB model never needs a
 * host copy of more than one chunk. */
#include "model/model_random.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "kernels/dms_rng.h"

#define CHUNK ((size_t)1 << 20) /* elements generated and uploaded at once */

typedef struct {
    dms_model *m;
    uint64_t seed, tensor; /* tensor: a running id, so that every tensor draws its own numbers */
    int fill;
    float *host;           /* CHUNK floats (fill only) */
} rand_ctx;

/* kind: 0 uniform with std 0.02, 1 ones (norm weights). */
static void *make_tensor(rand_ctx *r, size_t n, dms_dtype dt, int kind) {
    const dms_backend *be = r->m->be;
    void *dev = be->alloc(be->ctx, dms_dtype_bytes(dt, n));
    const uint64_t id = r->tensor++;
    if (!dev || !r->fill) return dev;
    const float a = 0.02f * 1.7320508f; /* uniform(-a, a) has std 0.02 */
    for (size_t at = 0; at < n; at += CHUNK) {
        const size_t k = n - at < CHUNK ? n - at : CHUNK;
        const uint64_t base = dms_rng_key(r->seed, 0x7a3d, id, 0, at);
        for (size_t i = 0; i < k; i++) /* serial: ~3 ns a value, faster than waking a thread team per chunk */
            r->host[i] = kind == 1 ? 1.0f : a * (2.0f * dms_rng_uniform(dms_mix64(base ^ i)) - 1.0f);
        if (dt == DMS_BF16) {
            uint16_t *h16 = (uint16_t *)r->host; /* front to back never overwrites an unread float */
            for (size_t i = 0; i < k; i++) h16[i] = dms_f32_to_bf16(r->host[i]);
        }
        be->upload(be->ctx, (char *)dev + dms_dtype_bytes(dt, at), r->host, dms_dtype_bytes(dt, k));
    }
    return dev;
}

static int make_mat(rand_ctx *r, dms_mat *w, int rows, int cols) {
    const dms_dtype dt = r->m->be->weight_dtype;
    *w = (dms_mat){make_tensor(r, (size_t)rows * cols, dt, 0), dt, rows, cols};
    r->m->n_params += (size_t)rows * cols;
    return w->data ? 0 : -1;
}

static int make_vec(rand_ctx *r, float **v, int n, int kind) {
    *v = make_tensor(r, (size_t)n, DMS_F32, kind);
    r->m->n_params += (size_t)n;
    return *v ? 0 : -1;
}

int dms_model_init_random(dms_model *m, const char *path, const dms_backend *be, uint64_t seed, int layers,
                          int fill, dms_err *err) {
    if (dms_model_load(m, path, be, 0, err) != 0) return -1; /* the config only */
    dms_config *c = &m->cfg;
    if (layers > 0 && layers < c->n_layers) c->n_layers = layers;
    rand_ctx r = {.m = m, .seed = seed, .fill = fill};
    const int d = c->hidden, hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd, ff = c->intermediate;
    int rc = fill && !(r.host = malloc(sizeof(float) * CHUNK)) ? -1 : 0;
    m->layers = rc ? NULL : calloc((size_t)c->n_layers, sizeof(dms_layer));
    if (!m->layers) rc = -1;
    if (!rc) rc = make_mat(&r, &m->embed, c->vocab, d) || make_vec(&r, &m->final_norm, d, 1);
    if (!rc) {
        if (c->tie_embeddings) m->lm_head = m->embed;
        else rc = make_mat(&r, &m->lm_head, c->vocab, d);
    }
    for (int l = 0; !rc && l < c->n_layers; l++) {
        dms_layer *L = &m->layers[l];
        rc = make_vec(&r, &L->attn_norm, d, 1) || make_vec(&r, &L->ffn_norm, d, 1) || make_mat(&r, &L->wq, qd, d) ||
             make_mat(&r, &L->wk, kvd, d) || make_mat(&r, &L->wv, kvd, d) || make_mat(&r, &L->wo, d, qd) ||
             make_mat(&r, &L->w_gate, ff, d) || make_mat(&r, &L->w_up, ff, d) || make_mat(&r, &L->w_down, d, ff);
        if (!rc && c->qkv_bias)
            rc = make_vec(&r, &L->bq, qd, 0) || make_vec(&r, &L->bk, kvd, 0) || make_vec(&r, &L->bv, kvd, 0);
        if (!rc && c->qk_norm) rc = make_vec(&r, &L->q_norm, hd, 1) || make_vec(&r, &L->k_norm, hd, 1);
    }
    float *inv = rc ? NULL : malloc(sizeof(float) * (size_t)(hd / 2));
    if (inv) {
        dms_config_rope_inv_freq(c, inv);
        m->inv_freq = be->alloc(be->ctx, dms_dtype_bytes(DMS_F32, (size_t)(hd / 2)));
        if (m->inv_freq) dms_upload_f32(be, m->inv_freq, inv, (size_t)(hd / 2));
        else rc = -1;
        free(inv);
    } else {
        rc = -1;
    }
    free(r.host);
    snprintf(m->weight_types, sizeof m->weight_types, "random");
    if (rc) {
        dms_model_free(m);
        return dms_errf(err, "%s: out of memory for random weights at the config's shapes", path);
    }
    return 0;
}
