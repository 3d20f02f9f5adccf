/* layer.c - the one transformer layer (layer.h), with the DMS heads and
 * LoRA branches of the student, every op through the backend table. */
#include "model/layer.h"

#include <math.h>

void dms_layer_acts_init(dms_layer_acts *a, dms_arena *ar, const dms_model *m, int cap, int training) {
    const dms_config *c = &m->cfg;
    const size_t T = (size_t)cap, d = (size_t)c->hidden, qd = (size_t)c->n_heads * c->head_dim,
                 kvd = (size_t)c->n_kv_heads * c->head_dim, ff = (size_t)c->intermediate;
    *a = (dms_layer_acts){.cap = cap};
    a->pos = dms_arena_i32(ar, T);
    a->n1 = dms_arena_f32(ar, T * d);
    a->a = m->has_heads && c->dms.separate_alpha ? dms_arena_f32(ar, T * d) : NULL;
    a->q = dms_arena_f32(ar, T * qd);
    a->k = dms_arena_f32(ar, T * kvd);
    a->qpre = training ? dms_arena_f32(ar, T * qd) : a->q;
    a->kpre = training ? dms_arena_f32(ar, T * kvd) : a->k;
    a->v = dms_arena_f32(ar, T * kvd);
    a->zraw = dms_arena_f32(ar, T * (size_t)c->n_kv_heads);
    a->att = dms_arena_f32(ar, T * qd);
    a->lse = dms_arena_f32(ar, T * (size_t)c->n_heads);
    a->xmid = dms_arena_f32(ar, T * d);
    a->n2 = dms_arena_f32(ar, T * d);
    a->g = dms_arena_f32(ar, T * ff);
    a->up = dms_arena_f32(ar, T * ff);
    a->hb = dms_arena_f32(ar, T * ff);
    if (m->lora_rank > 0) {
        for (int j = 0; j < DMS_LORA_N; j++) a->lora_xa[j] = dms_arena_f32(ar, T * (size_t)m->lora_rank);
        a->lora_tmp = dms_arena_f32(ar, T * (qd > d ? qd : d));
    }
}

/* LoRA branch j of layer l: y += s * B (A x); keeps A x in a->lora_xa[j]. */
static void lora_forward(const dms_model *m, const dms_layer *L, int j, dms_layer_acts *a, const float *x, float *y,
                         int n) {
    const dms_backend *be = m->be;
    const dms_lora *lo = &L->lora[j];
    be->matmul(be->ctx, a->lora_xa[j], x, &lo->a, NULL, n);
    be->matmul(be->ctx, a->lora_tmp, a->lora_xa[j], &lo->b, NULL, n);
    be->axpy(be->ctx, y, m->lora_scale, a->lora_tmp, (size_t)n * lo->b.rows);
}

void dms_layer_forward(const dms_model *m, int l, const float *x_in, float *x_out, dms_layer_acts *a, int n,
                       dms_attn *attn) {
    const dms_backend *be = m->be;
    void *ctx = be->ctx;
    const dms_config *c = &m->cfg;
    const dms_layer *L = &m->layers[l];
    const int d = c->hidden, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
    const int heads = attn->student && m->has_heads;
    const int adapter = heads && c->dms.separate_alpha, neuron = heads && !c->dms.separate_alpha;
    const int lora = attn->student && m->lora_rank > 0;

    if (adapter) { /* z_raw = W_a . RMSNorm_a(x_in), from the residual before input_layernorm */
        be->rmsnorm(ctx, a->a, x_in, L->heads.w_a_norm, n, d, c->rms_eps);
        be->matmul(ctx, a->zraw, a->a, &L->heads.w_a, NULL, n);
    }
    be->rmsnorm(ctx, a->n1, x_in, L->attn_norm, n, d, c->rms_eps);
    {
        float *const outs[3] = {a->qpre, a->kpre, a->v};
        const dms_mat *const ws[3] = {&L->wq, &L->wk, &L->wv};
        const float *const biases[3] = {L->bq, L->bk, L->bv};
        be->matmul_multi(ctx, 3, outs, a->n1, ws, biases, n);
    }
    if (neuron) { /* the decision rows replace their channel of q (q_proj is never written) */
        be->matmul(ctx, a->zraw, a->n1, &L->heads.q_rows, L->heads.q_rows_bias, n);
        be->dms_neuron_put(ctx, a->qpre, a->zraw, n, H, KV, hd, 0.0f);
    }
    if (lora) {
        lora_forward(m, L, DMS_LORA_Q, a, a->n1, a->qpre, n);
        lora_forward(m, L, DMS_LORA_K, a, a->n1, a->kpre, n);
        lora_forward(m, L, DMS_LORA_V, a, a->n1, a->v, n);
    }
    if (c->qk_norm) {
        be->rmsnorm(ctx, a->q, a->qpre, L->q_norm, n * H, hd, c->rms_eps);
        be->rmsnorm(ctx, a->k, a->kpre, L->k_norm, n * KV, hd, c->rms_eps);
    } else {
        if (a->q != a->qpre) dms_copy_f32(be, a->q, a->qpre, (size_t)n * H * hd);
        if (a->k != a->kpre) dms_copy_f32(be, a->k, a->kpre, (size_t)n * KV * hd);
    }
    /* neuron: the logit is channel D-1 after q-norm, before RoPE; the channel
     * is zeroed before and after RoPE (docs/dms_reference_notes.md section 2),
     * or, in the training warm-up, scaled by g with the logit scaled by 1 - g */
    const float g = neuron ? attn->neuron_keep : 0.0f;
    if (neuron) be->dms_neuron_take(ctx, a->zraw, a->q, n, H, KV, hd, g);
    if (neuron && g > 0.0f) be->scale(ctx, a->zraw, 1.0f - g, (size_t)n * KV);
    be->rope(ctx, a->q, a->pos, m->inv_freq, n, H, hd);
    be->rope(ctx, a->k, a->pos, m->inv_freq, n, KV, hd);
    if (neuron) be->dms_neuron_take(ctx, NULL, a->q, n, H, KV, hd, g);
    attn->attend(attn, m, l, a, n);
    be->matmul(ctx, a->xmid, a->att, &L->wo, NULL, n);
    if (lora) lora_forward(m, L, DMS_LORA_O, a, a->att, a->xmid, n);
    be->add(ctx, a->xmid, x_in, (size_t)n * d);
    be->rmsnorm(ctx, a->n2, a->xmid, L->ffn_norm, n, d, c->rms_eps);
    {
        float *const outs[2] = {a->g, a->up};
        const dms_mat *const ws[2] = {&L->w_gate, &L->w_up};
        be->matmul_multi(ctx, 2, outs, a->n2, ws, NULL, n);
    }
    if (!x_out) return; /* the backward's recompute (layer.h) */
    be->swiglu(ctx, a->hb, a->g, a->up, (size_t)n * c->intermediate);
    be->matmul(ctx, x_out, a->hb, &L->w_down, NULL, n);
    be->add(ctx, x_out, a->xmid, (size_t)n * d);
}
