/* dms_heads.c - the trainable parts DMS adds to a model: the eviction-logit
 * heads of every layer (adapter W_a + norm, or the neuron variant's
 * decision rows taken from q_proj into their own tensor) and optional LoRA
 * branches on q/k/v/o. All fp32 in backend memory, owned by the model. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "kernels/dms_rng.h"
#include "kernels/dtype.h"
#include "model/model.h"

int dms_neuron_row(const dms_config *c, int h) { return h * (c->n_heads / c->n_kv_heads) * c->head_dim + c->head_dim - 1; }

/* fp32 backend copy of a host vector; NULL on failure. */
static float *upload_new(const dms_backend *be, const float *host, size_t n) {
    float *p = be->alloc(be->ctx, dms_dtype_bytes(DMS_F32, n));
    if (p) dms_upload_f32(be, p, host, n);
    return p;
}

/* Row `row` of a weight in backend memory (any weight dtype), widened to
 * fp32 on the host. */
static int read_row(const dms_backend *be, const dms_mat *w, int row, float *out) {
    const size_t cols = (size_t)w->cols, bytes = dms_dtype_bytes(w->dtype, cols);
    const char *src = (const char *)w->data + (size_t)row * bytes;
    if (w->dtype == DMS_F32) {
        be->download(be->ctx, out, src, bytes);
        return 0;
    }
    void *tmp = malloc(bytes);
    if (!tmp) return -1;
    be->download(be->ctx, tmp, src, bytes);
    dms_dtype_to_f32(w->dtype, tmp, out, cols);
    free(tmp);
    return 0;
}

void dms_model_free_heads(dms_model *m) {
    const dms_backend *be = m->be;
    for (int l = 0; m->layers && l < m->cfg.n_layers; l++) {
        dms_heads *h = &m->layers[l].heads;
        void *ptrs[] = {h->w_a.data, h->w_a_norm, h->q_rows.data, h->q_rows_bias};
        for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
            if (ptrs[i]) be->free(be->ctx, ptrs[i]);
        memset(h, 0, sizeof *h);
    }
    m->has_heads = 0;
}

int dms_model_init_heads(dms_model *m, const dms_dms_config *d, dms_err *err) {
    const dms_dms_config want = *d; /* d may point into m->cfg */
    dms_model_free_heads(m);
    const dms_backend *be = m->be;
    const dms_config *c = &m->cfg;
    const int D = c->hidden, KV = c->n_kv_heads;
    float *host = malloc(sizeof(float) * (size_t)KV * D);
    float *bias = malloc(sizeof(float) * (size_t)KV);
    int rc = host && bias ? 0 : dms_errf(err, "%s: out of memory for DMS heads", m->path);
    for (int l = 0; rc == 0 && l < c->n_layers; l++) {
        dms_layer *L = &m->layers[l];
        dms_heads *h = &L->heads;
        if (want.separate_alpha) { /* W_a = 0: every logit starts at -offset; norm weight 1 */
            h->w_a = (dms_mat){be->alloc(be->ctx, dms_dtype_bytes(DMS_F32, (size_t)KV * D)), DMS_F32, KV, D};
            for (int i = 0; i < D; i++) host[i] = 1.0f;
            h->w_a_norm = upload_new(be, host, (size_t)D);
            if (!h->w_a.data || !h->w_a_norm) rc = -1;
        } else {
            for (int k = 0; k < KV && rc == 0; k++) {
                const int row = dms_neuron_row(c, k);
                rc = read_row(be, &L->wq, row, host + (size_t)k * D);
                if (L->bq) dms_download_f32(be, &bias[k], L->bq + row, 1);
            }
            h->q_rows = (dms_mat){upload_new(be, host, (size_t)KV * D), DMS_F32, KV, D};
            h->q_rows_bias = L->bq ? upload_new(be, bias, (size_t)KV) : NULL;
            if (!h->q_rows.data || (L->bq && !h->q_rows_bias)) rc = -1;
        }
        if (rc) dms_errf(err, "%s: out of backend memory for the DMS heads", m->path);
    }
    free(host);
    free(bias);
    if (rc) {
        dms_model_free_heads(m);
        return -1;
    }
    m->has_heads = 1;
    m->cfg.dms = want;
    m->cfg.dms.present = 1;
    return 0;
}

void dms_model_free_lora(dms_model *m) {
    for (int l = 0; m->layers && l < m->cfg.n_layers; l++)
        for (int j = 0; j < DMS_LORA_N; j++) {
            dms_lora *lo = &m->layers[l].lora[j];
            if (lo->a.data) m->be->free(m->be->ctx, lo->a.data);
            if (lo->b.data) m->be->free(m->be->ctx, lo->b.data);
            memset(lo, 0, sizeof *lo);
        }
    m->lora_rank = 0;
}

int dms_model_add_lora(dms_model *m, int rank, float alpha, uint64_t seed, dms_err *err) {
    dms_model_free_lora(m);
    if (rank <= 0) return 0;
    const dms_backend *be = m->be;
    const dms_config *c = &m->cfg;
    const int d = c->hidden, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    const int max_in = qd > d ? qd : d;
    float *init = malloc(sizeof(float) * (size_t)rank * max_in);
    int rc = init ? 0 : -1;
    for (int l = 0; rc == 0 && l < c->n_layers; l++)
        for (int j = 0; rc == 0 && j < DMS_LORA_N; j++) {
            const int in = j == DMS_LORA_O ? qd : d;
            const int out = j == DMS_LORA_Q ? qd : j == DMS_LORA_O ? d : kvd;
            dms_lora *lo = &m->layers[l].lora[j];
            /* A ~ U(-1/sqrt(in), 1/sqrt(in)) from the counter RNG (seeded, reproducible); B = 0 */
            const size_t n = (size_t)rank * in;
            const float bound = 1.0f / sqrtf((float)in);
            for (size_t i = 0; i < n; i++)
                init[i] = bound * (2.0f * dms_rng_uniform(dms_rng_key(seed, 0x10a, (uint64_t)l, (uint64_t)j, i)) - 1.0f);
            lo->a = (dms_mat){upload_new(be, init, n), DMS_F32, rank, in};
            lo->b = (dms_mat){be->alloc(be->ctx, dms_dtype_bytes(DMS_F32, (size_t)out * rank)), DMS_F32, out, rank};
            if (!lo->a.data || !lo->b.data) rc = -1;
        }
    free(init);
    if (rc) {
        dms_model_free_lora(m);
        return dms_errf(err, "%s: out of backend memory for LoRA of rank %d", m->path, rank);
    }
    m->lora_rank = rank;
    m->lora_scale = alpha / (float)rank;
    return 0;
}
