/* trainer.c - the DMS training step (trainer.h): heads, forward passes for
 * teacher and student, chunked KD, compression loss, backward with layer
 * recompute, gradient clipping and AdamW. Conventions follow DESIGN.md
 * section 1 and docs/dms_reference_notes.md: per-document positions and
 * masks, decisions emitted by token j+1 about key j, soft log-keep bias
 * outside the window, straight-through hard decisions in the compression
 * loss (clamped per row), KL(student || teacher) over tokens whose input is
 * not EOS. */
#include "train/trainer.h"

#include <math.h>

#include "kernels/dms_rng.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { MODE_TEACHER = 0, MODE_STUDENT = 1 } pass_mode;
enum { LORA_Q = 0, LORA_K, LORA_V, LORA_O };
static const char *const lora_names[4] = {"q_proj", "k_proj", "v_proj", "o_proj"};

struct dms_trainer {
    dms_model *m;
    const dms_backend *be;
    dms_train_config cfg;
    int T, L, d, H, KV, hd, ff, V;
    int n_params;
    dms_param *params;
    float *grad_arena;  /* every parameter's gradient, contiguous: one all-reduce */
    size_t n_grad;
    /* views into params, per layer */
    dms_mat *wa;        /* adapter W_a [KV, d] */
    float **norm_a;     /* adapter norm weight [d] */
    dms_param **pw_a, **pnorm_a, **pq_rows;
    float **q_rows_orig; /* neuron: the base model's decision rows [KV, d] */
    /* LoRA on q, k, v, o (index LORA_Q..LORA_O): A [r, in], B [out, r] */
    int r;
    float lora_scale;    /* lora_alpha / r */
    dms_param *(*lora_a)[4], *(*lora_b)[4];
    float *lora_xa[4];   /* [T, r]: x A^T of the current layer */
    float *lora_tmp;     /* [T, max out] */
    float *lora_dr;      /* [T, r] */
    /* per-row activations (backend memory) */
    float *xs;          /* [(L+1), T, d] student layer inputs */
    float *h_teacher;   /* [T, d] teacher final hidden (after the final norm) */
    float *h_student;   /* [T, d] */
    int32_t *ids, *seg, *pos;
    float *kd_w;        /* [T] KD weight per token */
    float *noise;       /* [L, T, KV] this row's noise */
    /* one layer's intermediates */
    float *n1, *a, *qpre, *q, *kpre, *k, *v, *att, *lse, *xmid, *n2, *g, *up, *hb;
    float *zraw, *u, *logkeep, *hard;
    /* gradients */
    float *dx, *dxmid, *dtmp, *dff1, *dff2, *datt, *dq, *dk, *dv, *dlogkeep, *dzraw, *dcol;
    /* KD chunk */
    float *zs, *zt, *kd_rows;
    /* host scratch */
    float *host_kd;
};

static float *alloc_f(dms_trainer *tr, size_t n, int *ok) {
    float *p = tr->be->alloc(tr->be->ctx, n * sizeof(float));
    if (!p) *ok = 0;
    return p;
}

int dms_trainer_n_params(const dms_trainer *tr) { return tr->n_params; }
const dms_backend *dms_trainer_backend(const dms_trainer *tr) { return tr->be; }
dms_param *dms_trainer_param(dms_trainer *tr, int i) { return &tr->params[i]; }

static dms_param *add_param(dms_trainer *tr, const char *name, int rows, int cols, int *ok) {
    dms_param *p = &tr->params[tr->n_params++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->rows = rows;
    p->cols = cols;
    p->n = (size_t)rows * (size_t)(cols ? cols : 1);
    p->p = alloc_f(tr, p->n, ok);
    p->g = NULL; /* carved from the gradient arena once every tensor is known */
    p->m = alloc_f(tr, p->n, ok);
    p->v = alloc_f(tr, p->n, ok);
    return p;
}

/* Row index in q_proj of the decision channel of KV head h (neuron variant). */
static int neuron_row(const dms_trainer *tr, int h) { return h * (tr->H / tr->KV) * tr->hd + tr->hd - 1; }

/* Copies the KV decision rows (each d floats) between q_proj and rows[]. */
static void neuron_rows_copy(dms_trainer *tr, int l, float *rows, int to_wq) {
    float *wq = tr->m->layers[l].wq.data;
    for (int h = 0; h < tr->KV; h++) {
        float *row = wq + (size_t)neuron_row(tr, h) * tr->d;
        float *mine = rows + (size_t)h * tr->d;
        if (to_wq) tr->be->copy(tr->be->ctx, row, mine, sizeof(float) * tr->d);
        else tr->be->copy(tr->be->ctx, mine, row, sizeof(float) * tr->d);
    }
}

dms_trainer *dms_trainer_create(dms_model *m, const dms_train_config *cfg, dms_err *err) {
    const dms_backend *be = m->be;
    if (!be->attention_dms_fwd || !be->attention_dms_bwd || !be->dms_decide || !be->adamw) {
        dms_errf(err, "backend '%s' does not implement the training ops yet", be->name);
        return NULL;
    }
    if (m->cfg.n_layers > DMS_MAX_LAYERS) {
        dms_errf(err, "%s: %d layers (at most %d supported)", m->path, m->cfg.n_layers, DMS_MAX_LAYERS);
        return NULL;
    }
    if (m->embed.dtype != DMS_F32) {
        dms_errf(err, "%s: training needs fp32 weights on this backend", m->path);
        return NULL;
    }
    dms_trainer *tr = calloc(1, sizeof *tr);
    tr->m = m;
    tr->be = be;
    tr->cfg = *cfg;
    const dms_config *c = &m->cfg;
    tr->T = cfg->max_len;
    tr->L = c->n_layers;
    tr->d = c->hidden;
    tr->H = c->n_heads;
    tr->KV = c->n_kv_heads;
    tr->hd = c->head_dim;
    tr->ff = c->intermediate;
    tr->V = c->vocab;
    const size_t T = (size_t)tr->T, d = (size_t)tr->d, L = (size_t)tr->L, KV = (size_t)tr->KV,
                 qd = (size_t)tr->H * tr->hd, kvd = KV * tr->hd, ff = (size_t)tr->ff;
    int ok = 1;
    tr->r = cfg->lora_rank;
    tr->lora_scale = tr->r > 0 ? cfg->lora_alpha / (float)tr->r : 0.0f;
    tr->params = calloc((2 + (tr->r > 0 ? 8 : 0)) * L, sizeof(dms_param));
    tr->lora_a = calloc(L, sizeof *tr->lora_a);
    tr->lora_b = calloc(L, sizeof *tr->lora_b);
    tr->wa = calloc(L, sizeof(dms_mat));
    tr->norm_a = calloc(L, sizeof(float *));
    tr->pw_a = calloc(L, sizeof(dms_param *));
    tr->pnorm_a = calloc(L, sizeof(dms_param *));
    tr->pq_rows = calloc(L, sizeof(dms_param *));
    tr->q_rows_orig = calloc(L, sizeof(float *));
    char name[128];
    for (int l = 0; l < tr->L && ok; l++) {
        if (cfg->variant == DMS_VARIANT_ADAPTER) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.dms_proj_alpha.weight", l);
            tr->pw_a[l] = add_param(tr, name, (int)KV, (int)d, &ok);
            snprintf(name, sizeof name, "model.layers.%d.self_attn.dms_proj_alpha_norm.weight", l);
            tr->pnorm_a[l] = add_param(tr, name, (int)d, 0, &ok);
            if (!ok) break;
            tr->wa[l] = (dms_mat){tr->pw_a[l]->p, DMS_F32, (int)KV, (int)d};
            tr->norm_a[l] = tr->pnorm_a[l]->p;
            float *ones = malloc(sizeof(float) * d);
            for (size_t i = 0; i < d; i++) ones[i] = 1.0f;
            be->upload(be->ctx, tr->norm_a[l], ones, sizeof(float) * d);
            free(ones); /* W_a stays zero: every logit starts at -offset */
        } else {
            /* The trainable tensor is the set of decision rows of q_proj;
             * its name says which rows (exported merged into q_proj). */
            snprintf(name, sizeof name, "model.layers.%d.self_attn.q_proj.dms_rows", l);
            tr->pq_rows[l] = add_param(tr, name, (int)KV, (int)d, &ok);
            tr->q_rows_orig[l] = alloc_f(tr, KV * d, &ok);
            if (!ok) break;
            neuron_rows_copy(tr, l, tr->pq_rows[l]->p, 0);
            neuron_rows_copy(tr, l, tr->q_rows_orig[l], 0);
        }
    }
    for (int l = 0; l < tr->L && ok && tr->r > 0; l++) {
        for (int j = 0; j < 4; j++) {
            const int in = j == LORA_O ? (int)qd : (int)d;
            const int out = j == LORA_Q ? (int)qd : j == LORA_O ? (int)d : (int)kvd;
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.lora_A.weight", l, lora_names[j]);
            tr->lora_a[l][j] = add_param(tr, name, tr->r, in, &ok);
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.lora_B.weight", l, lora_names[j]);
            tr->lora_b[l][j] = add_param(tr, name, out, tr->r, &ok); /* zero: starts as the base model */
            if (!ok) break;
            /* A ~ U(-1/sqrt(in), 1/sqrt(in)) from the counter RNG (seeded, reproducible) */
            const size_t n = (size_t)tr->r * in;
            float *init = malloc(sizeof(float) * n);
            const float bound = 1.0f / sqrtf((float)in);
            for (size_t i = 0; i < n; i++)
                init[i] = bound * (2.0f * dms_rng_uniform(dms_rng_key(cfg->seed, 0x10a, (uint64_t)l, (uint64_t)j, i)) - 1.0f);
            be->upload(be->ctx, tr->lora_a[l][j]->p, init, sizeof(float) * n);
            free(init);
        }
    }
    for (int i = 0; i < tr->n_params; i++) tr->n_grad += tr->params[i].n;
    tr->grad_arena = alloc_f(tr, tr->n_grad ? tr->n_grad : 1, &ok);
    for (size_t i = 0, off = 0; ok && i < (size_t)tr->n_params; off += tr->params[i].n, i++)
        tr->params[i].g = tr->grad_arena + off;
    for (int j = 0; j < 4 && tr->r > 0; j++) tr->lora_xa[j] = alloc_f(tr, T * (size_t)tr->r, &ok);
    if (tr->r > 0) {
        tr->lora_tmp = alloc_f(tr, T * (qd > d ? qd : d), &ok);
        tr->lora_dr = alloc_f(tr, T * (size_t)tr->r, &ok);
    }
    tr->xs = alloc_f(tr, (L + 1) * T * d, &ok);
    tr->h_teacher = alloc_f(tr, T * d, &ok);
    tr->h_student = alloc_f(tr, T * d, &ok);
    tr->ids = be->alloc(be->ctx, T * sizeof(int32_t));
    tr->seg = be->alloc(be->ctx, T * sizeof(int32_t));
    tr->pos = be->alloc(be->ctx, T * sizeof(int32_t));
    if (!tr->ids || !tr->seg || !tr->pos) ok = 0;
    tr->kd_w = alloc_f(tr, T, &ok);
    tr->noise = alloc_f(tr, L * T * KV, &ok);
    tr->n1 = alloc_f(tr, T * d, &ok);
    tr->a = alloc_f(tr, T * d, &ok);
    tr->qpre = alloc_f(tr, T * qd, &ok);
    tr->q = alloc_f(tr, T * qd, &ok);
    tr->kpre = alloc_f(tr, T * kvd, &ok);
    tr->k = alloc_f(tr, T * kvd, &ok);
    tr->v = alloc_f(tr, T * kvd, &ok);
    tr->att = alloc_f(tr, T * qd, &ok);
    tr->lse = alloc_f(tr, T * (size_t)tr->H, &ok);
    tr->xmid = alloc_f(tr, T * d, &ok);
    tr->n2 = alloc_f(tr, T * d, &ok);
    tr->g = alloc_f(tr, T * ff, &ok);
    tr->up = alloc_f(tr, T * ff, &ok);
    tr->hb = alloc_f(tr, T * ff, &ok);
    tr->zraw = alloc_f(tr, T * KV, &ok);
    tr->u = alloc_f(tr, T * KV, &ok);
    tr->logkeep = alloc_f(tr, T * KV, &ok);
    tr->hard = alloc_f(tr, T * KV, &ok);
    tr->dx = alloc_f(tr, T * d, &ok);
    tr->dxmid = alloc_f(tr, T * d, &ok);
    tr->dtmp = alloc_f(tr, T * d, &ok);
    tr->dff1 = alloc_f(tr, T * ff, &ok);
    tr->dff2 = alloc_f(tr, T * ff, &ok);
    tr->datt = alloc_f(tr, T * qd, &ok);
    tr->dq = alloc_f(tr, T * qd, &ok);
    tr->dk = alloc_f(tr, T * kvd, &ok);
    tr->dv = alloc_f(tr, T * kvd, &ok);
    tr->dlogkeep = alloc_f(tr, T * KV, &ok);
    tr->dzraw = alloc_f(tr, T * KV, &ok);
    tr->dcol = alloc_f(tr, T * KV, &ok);
    const size_t chunk = (size_t)(cfg->kd_chunk < tr->T ? cfg->kd_chunk : tr->T);
    tr->zs = alloc_f(tr, chunk * (size_t)tr->V, &ok);
    tr->zt = alloc_f(tr, chunk * (size_t)tr->V, &ok);
    tr->kd_rows = alloc_f(tr, chunk, &ok);
    tr->host_kd = malloc(sizeof(float) * chunk);
    if (!ok) {
        dms_trainer_free(tr);
        dms_errf(err, "%s: out of memory for training buffers (max_len %d)", m->path, cfg->max_len);
        return NULL;
    }
    return tr;
}

void dms_trainer_free(dms_trainer *tr) {
    if (!tr) return;
    const dms_backend *be = tr->be;
    for (int i = 0; i < tr->n_params; i++) {
        be->free(be->ctx, tr->params[i].p);
        be->free(be->ctx, tr->params[i].m);
        be->free(be->ctx, tr->params[i].v);
    }
    for (int l = 0; l < tr->L; l++)
        if (tr->q_rows_orig && tr->q_rows_orig[l]) {
            neuron_rows_copy(tr, l, tr->q_rows_orig[l], 1); /* give the model back unchanged */
            be->free(be->ctx, tr->q_rows_orig[l]);
        }
    void *bufs[] = {tr->xs, tr->h_teacher, tr->h_student, tr->ids, tr->seg, tr->pos, tr->kd_w, tr->noise,
                    tr->n1, tr->a, tr->qpre, tr->q, tr->kpre, tr->k, tr->v, tr->att, tr->lse, tr->xmid,
                    tr->n2, tr->g, tr->up, tr->hb, tr->zraw, tr->u, tr->logkeep, tr->hard, tr->dx,
                    tr->dxmid, tr->dtmp, tr->dff1, tr->dff2, tr->datt, tr->dq, tr->dk, tr->dv,
                    tr->dlogkeep, tr->dzraw, tr->dcol, tr->zs, tr->zt, tr->kd_rows, tr->lora_xa[0],
                    tr->lora_xa[1], tr->lora_xa[2], tr->lora_xa[3], tr->lora_tmp, tr->lora_dr};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->free(be->ctx, bufs[i]);
    if (tr->grad_arena) be->free(be->ctx, tr->grad_arena);
    free(tr->host_kd);
    free(tr->params);
    free(tr->wa);
    free(tr->norm_a);
    free(tr->pw_a);
    free(tr->pnorm_a);
    free(tr->pq_rows);
    free(tr->q_rows_orig);
    free(tr->lora_a);
    free(tr->lora_b);
    free(tr);
}

/* ------------------------------------------------------------------ */
/* forward                                                              */
/* ------------------------------------------------------------------ */

/* LoRA branch of target j in layer l: y += s * B (A x); keeps A x. */
static void lora_forward(dms_trainer *tr, int l, int j, const float *x, float *y) {
    const dms_backend *be = tr->be;
    const dms_param *A = tr->lora_a[l][j], *B = tr->lora_b[l][j];
    const dms_mat Am = {A->p, DMS_F32, A->rows, A->cols}, Bm = {B->p, DMS_F32, B->rows, B->cols};
    be->matmul(be->ctx, tr->lora_xa[j], x, &Am, NULL, tr->T);
    be->matmul(be->ctx, tr->lora_tmp, tr->lora_xa[j], &Bm, NULL, tr->T);
    be->axpy(be->ctx, y, tr->lora_scale, tr->lora_tmp, (size_t)tr->T * B->rows);
}

/* Its backward given dy: dB += s dy^T (A x), dA += s (dy B)^T x, dx += s (dy B) A. */
static void lora_backward(dms_trainer *tr, int l, int j, const float *x, const float *dy, float *dx) {
    const dms_backend *be = tr->be;
    void *ctx = be->ctx;
    const dms_param *A = tr->lora_a[l][j], *B = tr->lora_b[l][j];
    const dms_mat Am = {A->p, DMS_F32, A->rows, A->cols}, Bm = {B->p, DMS_F32, B->rows, B->cols};
    const size_t Tr = (size_t)tr->T * tr->r;
    be->axpy(ctx, tr->lora_xa[j], tr->lora_scale - 1.0f, tr->lora_xa[j], Tr); /* xa *= s */
    be->matmul_bwd_w(ctx, B->g, NULL, dy, tr->lora_xa[j], tr->T, B->rows, B->cols);
    be->matmul_bwd_x(ctx, tr->lora_dr, dy, &Bm, tr->T, 0);
    be->axpy(ctx, tr->lora_dr, tr->lora_scale - 1.0f, tr->lora_dr, Tr); /* dr *= s */
    be->matmul_bwd_w(ctx, A->g, NULL, tr->lora_dr, x, tr->T, A->rows, A->cols);
    be->matmul_bwd_x(ctx, dx, tr->lora_dr, &Am, tr->T, 1);
}

/* One layer over the row: x_in -> x_out, leaving every intermediate in the
 * trainer's layer buffers (the backward pass reads them). In student mode it
 * also computes the decisions (u, log_keep, hard) of this layer. */
static void layer_forward(dms_trainer *tr, int l, const float *x_in, float *x_out, pass_mode mode) {
    const dms_backend *be = tr->be;
    void *ctx = be->ctx;
    const dms_config *c = &tr->m->cfg;
    const dms_layer *Ly = &tr->m->layers[l];
    const int T = tr->T, d = tr->d, H = tr->H, KV = tr->KV, hd = tr->hd;
    const int student = mode == MODE_STUDENT, neuron = tr->cfg.variant == DMS_VARIANT_NEURON;
    const int per_layer = tr->cfg.alpha_per == DMS_ALPHA_PER_LAYER;
    const float *noise = tr->noise + (size_t)l * T * KV;

    if (student && !neuron) {
        be->rmsnorm(ctx, tr->a, x_in, tr->norm_a[l], T, d, c->rms_eps);
        be->matmul(ctx, tr->zraw, tr->a, &tr->wa[l], NULL, T);
    }
    be->rmsnorm(ctx, tr->n1, x_in, Ly->attn_norm, T, d, c->rms_eps);
    be->matmul(ctx, tr->qpre, tr->n1, &Ly->wq, Ly->bq, T);
    be->matmul(ctx, tr->kpre, tr->n1, &Ly->wk, Ly->bk, T);
    be->matmul(ctx, tr->v, tr->n1, &Ly->wv, Ly->bv, T);
    const int lora = student && tr->r > 0;
    if (lora) {
        lora_forward(tr, l, LORA_Q, tr->n1, tr->qpre);
        lora_forward(tr, l, LORA_K, tr->n1, tr->kpre);
        lora_forward(tr, l, LORA_V, tr->n1, tr->v);
    }
    if (c->qk_norm) {
        be->rmsnorm(ctx, tr->q, tr->qpre, Ly->q_norm, T * H, hd, c->rms_eps);
        be->rmsnorm(ctx, tr->k, tr->kpre, Ly->k_norm, T * KV, hd, c->rms_eps);
    } else {
        be->copy(ctx, tr->q, tr->qpre, sizeof(float) * (size_t)T * H * hd);
        be->copy(ctx, tr->k, tr->kpre, sizeof(float) * (size_t)T * KV * hd);
    }
    if (student && neuron) be->dms_neuron_take(ctx, tr->zraw, tr->q, T, H, KV, hd, 1);
    if (student)
        be->dms_decide(ctx, tr->u, tr->logkeep, tr->hard, tr->zraw, noise, tr->seg, T, KV, tr->cfg.alpha_scale,
                       tr->cfg.alpha_offset, tr->cfg.tau, per_layer);
    be->rope(ctx, tr->q, tr->pos, tr->m->inv_freq, T, H, hd);
    be->rope(ctx, tr->k, tr->pos, tr->m->inv_freq, T, KV, hd);
    if (student && neuron) be->dms_neuron_take(ctx, NULL, tr->q, T, H, KV, hd, 1);
    be->attention_dms_fwd(ctx, tr->att, tr->lse, tr->q, tr->k, tr->v, student ? tr->logkeep : NULL, tr->seg, T,
                          H, KV, hd, tr->cfg.window, 1.0f / sqrtf((float)hd));
    be->matmul(ctx, tr->xmid, tr->att, &Ly->wo, NULL, T);
    if (lora) lora_forward(tr, l, LORA_O, tr->att, tr->xmid);
    be->add(ctx, tr->xmid, x_in, (size_t)T * d);
    be->rmsnorm(ctx, tr->n2, tr->xmid, Ly->ffn_norm, T, d, c->rms_eps);
    be->matmul(ctx, tr->g, tr->n2, &Ly->w_gate, NULL, T);
    be->matmul(ctx, tr->up, tr->n2, &Ly->w_up, NULL, T);
    be->swiglu(ctx, tr->hb, tr->g, tr->up, (size_t)T * tr->ff);
    be->matmul(ctx, x_out, tr->hb, &Ly->w_down, NULL, T);
    be->add(ctx, x_out, tr->xmid, (size_t)T * d);
}

/* Teacher: eviction off, base weights; keeps only the final hidden states. */
static void teacher_forward(dms_trainer *tr) {
    const dms_backend *be = tr->be;
    const size_t Td = (size_t)tr->T * tr->d;
    float *x = tr->xs, *y = tr->xs + Td; /* reuse the student's storage as ping-pong */
    if (tr->cfg.variant == DMS_VARIANT_NEURON)
        for (int l = 0; l < tr->L; l++) neuron_rows_copy(tr, l, tr->q_rows_orig[l], 1);
    be->embedding(be->ctx, x, &tr->m->embed, tr->ids, tr->T);
    for (int l = 0; l < tr->L; l++) {
        layer_forward(tr, l, x, y, MODE_TEACHER);
        float *t = x;
        x = y;
        y = t;
    }
    be->rmsnorm(be->ctx, tr->h_teacher, x, tr->m->final_norm, tr->T, tr->d, tr->m->cfg.rms_eps);
    if (tr->cfg.variant == DMS_VARIANT_NEURON)
        for (int l = 0; l < tr->L; l++) neuron_rows_copy(tr, l, tr->pq_rows[l]->p, 1);
}

/* Student: eviction on; keeps every layer input in xs; returns the sum of
 * hard decisions and fills per-layer sums. */
static double student_forward(dms_trainer *tr, double *per_layer_sum) {
    const dms_backend *be = tr->be;
    const size_t Td = (size_t)tr->T * tr->d;
    double total = 0;
    be->embedding(be->ctx, tr->xs, &tr->m->embed, tr->ids, tr->T);
    for (int l = 0; l < tr->L; l++) {
        layer_forward(tr, l, tr->xs + (size_t)l * Td, tr->xs + (size_t)(l + 1) * Td, MODE_STUDENT);
        double s = be->sumsq(be->ctx, tr->hard, (size_t)tr->T * tr->KV); /* hard is 0/1 */
        per_layer_sum[l] += s;
        total += s;
    }
    be->rmsnorm(be->ctx, tr->h_student, tr->xs + (size_t)tr->L * Td, tr->m->final_norm, tr->T, tr->d,
                tr->m->cfg.rms_eps);
    return total;
}

/* KD over the row in chunks through the LM head; writes dLoss/dh_student
 * into tr->dx and returns the weighted KD sum of the row. */
static double kd_backward(dms_trainer *tr) {
    const dms_backend *be = tr->be;
    void *ctx = be->ctx;
    const int T = tr->T, V = tr->V, d = tr->d;
    const int chunk = tr->cfg.kd_chunk < T ? tr->cfg.kd_chunk : T;
    float *w_host = malloc(sizeof(float) * (size_t)T);
    be->download(ctx, w_host, tr->kd_w, sizeof(float) * (size_t)T);
    double total = 0;
    for (int r0 = 0; r0 < T; r0 += chunk) {
        const int rows = T - r0 < chunk ? T - r0 : chunk;
        be->matmul(ctx, tr->zs, tr->h_student + (size_t)r0 * d, &tr->m->lm_head, NULL, rows);
        be->matmul(ctx, tr->zt, tr->h_teacher + (size_t)r0 * d, &tr->m->lm_head, NULL, rows);
        be->kd_chunk(ctx, tr->kd_rows, tr->zs, tr->zs, tr->zt, tr->kd_w + r0, rows, V);
        be->matmul_bwd_x(ctx, tr->dx + (size_t)r0 * d, tr->zs, &tr->m->lm_head, rows, 0);
        be->download(ctx, tr->host_kd, tr->kd_rows, sizeof(float) * (size_t)rows);
        for (int r = 0; r < rows; r++) total += (double)w_host[r0 + r] * tr->host_kd[r];
    }
    free(w_host);
    return total;
}

/* ------------------------------------------------------------------ */
/* backward                                                             */
/* ------------------------------------------------------------------ */

/* Given dL/d(layer output) in tr->dx, recompute layer l from its stored
 * input and replace tr->dx with dL/d(layer input), accumulating the
 * gradients of this layer's trainable tensors. dhard: dL/d(each
 * straight-through decision). */
static void layer_backward(dms_trainer *tr, int l, float dhard) {
    const dms_backend *be = tr->be;
    void *ctx = be->ctx;
    const dms_config *c = &tr->m->cfg;
    const dms_layer *Ly = &tr->m->layers[l];
    const int T = tr->T, d = tr->d, H = tr->H, KV = tr->KV, hd = tr->hd, ff = tr->ff;
    const size_t Td = (size_t)T * d;
    const int neuron = tr->cfg.variant == DMS_VARIANT_NEURON;
    const int per_layer = tr->cfg.alpha_per == DMS_ALPHA_PER_LAYER;
    const float *x_in = tr->xs + (size_t)l * Td;
    const float scale = 1.0f / sqrtf((float)hd);

    /* recompute (its output is not needed: xs[l+1] already holds it) */
    layer_forward(tr, l, x_in, tr->dtmp, MODE_STUDENT);

    /* MLP: x_out = xmid + down(swiglu(gate(n2), up(n2))) */
    be->copy(ctx, tr->dxmid, tr->dx, sizeof(float) * Td);
    be->matmul_bwd_x(ctx, tr->dff1, tr->dx, &Ly->w_down, T, 0);
    be->swiglu_bwd(ctx, tr->dff1, tr->dff2, tr->dff1, tr->g, tr->up, (size_t)T * ff);
    be->matmul_bwd_x(ctx, tr->dtmp, tr->dff1, &Ly->w_gate, T, 0);
    be->matmul_bwd_x(ctx, tr->dtmp, tr->dff2, &Ly->w_up, T, 1);
    be->rmsnorm_bwd(ctx, tr->dtmp, NULL, tr->dtmp, tr->xmid, Ly->ffn_norm, T, d, c->rms_eps);
    be->add(ctx, tr->dxmid, tr->dtmp, Td);

    /* attention: xmid = x_in + o(att) */
    be->matmul_bwd_x(ctx, tr->datt, tr->dxmid, &Ly->wo, T, 0);
    if (tr->r > 0) lora_backward(tr, l, LORA_O, tr->att, tr->dxmid, tr->datt);
    be->attention_dms_bwd(ctx, tr->dq, tr->dk, tr->dv, tr->dlogkeep, tr->datt, tr->att, tr->lse, tr->q, tr->k,
                          tr->v, tr->logkeep, tr->seg, T, H, KV, hd, tr->cfg.window, scale);
    be->dms_decide_bwd(ctx, tr->dzraw, tr->u, tr->dlogkeep, dhard, tr->seg, T, KV, tr->cfg.alpha_scale,
                       tr->cfg.tau, per_layer);
    if (neuron) be->dms_neuron_take(ctx, NULL, tr->dq, T, H, KV, hd, 1); /* zeroed after RoPE */
    be->rope_bwd(ctx, tr->dq, tr->pos, tr->m->inv_freq, T, H, hd);
    be->rope_bwd(ctx, tr->dk, tr->pos, tr->m->inv_freq, T, KV, hd);
    if (neuron) be->dms_neuron_put(ctx, tr->dq, tr->dzraw, T, H, KV, hd); /* the channel feeds z only */
    if (c->qk_norm) {
        be->rmsnorm_bwd(ctx, tr->dq, NULL, tr->dq, tr->qpre, Ly->q_norm, T * H, hd, c->rms_eps);
        be->rmsnorm_bwd(ctx, tr->dk, NULL, tr->dk, tr->kpre, Ly->k_norm, T * KV, hd, c->rms_eps);
    }
    if (neuron) { /* gradient of the decision rows of q_proj */
        be->dms_neuron_take(ctx, tr->dcol, tr->dq, T, H, KV, hd, 0);
        be->matmul_bwd_w(ctx, tr->pq_rows[l]->g, NULL, tr->dcol, tr->n1, T, KV, d);
    }
    be->matmul_bwd_x(ctx, tr->dtmp, tr->dq, &Ly->wq, T, 0);
    be->matmul_bwd_x(ctx, tr->dtmp, tr->dk, &Ly->wk, T, 1);
    be->matmul_bwd_x(ctx, tr->dtmp, tr->dv, &Ly->wv, T, 1);
    if (tr->r > 0) {
        lora_backward(tr, l, LORA_Q, tr->n1, tr->dq, tr->dtmp);
        lora_backward(tr, l, LORA_K, tr->n1, tr->dk, tr->dtmp);
        lora_backward(tr, l, LORA_V, tr->n1, tr->dv, tr->dtmp);
    }
    be->rmsnorm_bwd(ctx, tr->dtmp, NULL, tr->dtmp, x_in, Ly->attn_norm, T, d, c->rms_eps);
    be->copy(ctx, tr->dx, tr->dxmid, sizeof(float) * Td);
    be->add(ctx, tr->dx, tr->dtmp, Td);

    if (!neuron) { /* adapter: z_raw = W_a . RMSNorm_a(x_in) */
        be->matmul_bwd_w(ctx, tr->pw_a[l]->g, NULL, tr->dzraw, tr->a, T, KV, d);
        be->matmul_bwd_x(ctx, tr->dtmp, tr->dzraw, &tr->wa[l], T, 0);
        be->rmsnorm_bwd(ctx, tr->dtmp, tr->pnorm_a[l]->g, tr->dtmp, x_in, tr->norm_a[l], T, d, c->rms_eps);
        be->add(ctx, tr->dx, tr->dtmp, Td);
    }
}

/* ------------------------------------------------------------------ */

static int row_setup(dms_trainer *tr, const dms_row *row, double kd_tokens_total, int64_t step,
                     const float *noise_override, int row_index, dms_err *err) {
    const int T = tr->T;
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)T);
    float *w = malloc(sizeof(float) * (size_t)T);
    const int32_t eos = tr->m->cfg.eos_id;
    int start = 0, rc = 0;
    for (int t = 0; t < T; t++) {
        if (row->ids[t] < 0 || row->ids[t] >= tr->V) {
            rc = dms_errf(err, "row %d: token id %d at position %d is outside the vocabulary (%d)", row_index,
                          row->ids[t], t, tr->V);
            break;
        }
        if (t > 0 && row->seg[t] != row->seg[t - 1]) {
            if (row->seg[t] < row->seg[t - 1]) {
                rc = dms_errf(err, "row %d: segment ids decrease at position %d", row_index, t);
                break;
            }
            start = t;
        }
        pos[t] = t - start;
        int counted = (!row->mask || row->mask[t]) && row->ids[t] != eos;
        w[t] = counted ? (float)(1.0 / kd_tokens_total) : 0.0f;
    }
    if (rc == 0) {
        const dms_backend *be = tr->be;
        be->upload(be->ctx, tr->ids, row->ids, sizeof(int32_t) * (size_t)T);
        be->upload(be->ctx, tr->seg, row->seg, sizeof(int32_t) * (size_t)T);
        be->upload(be->ctx, tr->pos, pos, sizeof(int32_t) * (size_t)T);
        be->upload(be->ctx, tr->kd_w, w, sizeof(float) * (size_t)T);
        const size_t TK = (size_t)T * tr->KV;
        for (int l = 0; l < tr->L; l++) {
            if (noise_override)
                be->upload(be->ctx, tr->noise + l * TK, noise_override + l * TK, sizeof(float) * TK);
            else
                be->dms_noise(be->ctx, tr->noise + l * TK, T, tr->KV, tr->cfg.seed, step, l, row->tok0);
        }
    }
    free(pos);
    free(w);
    return rc;
}

double dms_trainer_row_kd_tokens(const dms_trainer *tr, const dms_row *row) {
    double n = 0;
    for (int t = 0; t < tr->T; t++) n += (!row->mask || row->mask[t]) && row->ids[t] != tr->m->cfg.eos_id;
    return n;
}

/* Total loss, gradient norm and finiteness from the (reduced) parts. */
static void finish_stats(dms_trainer *tr, dms_step_stats *st) {
    st->loss = st->kd + tr->cfg.compression_weight * st->comp;
    st->grad_norm = sqrt(tr->be->sumsq(tr->be->ctx, tr->grad_arena, tr->n_grad));
    st->finite = isfinite(st->loss) && isfinite(st->grad_norm);
}

int dms_trainer_grads(dms_trainer *tr, const dms_row *rows, int n_rows, int64_t step, double kd_tokens_total,
                      int rows_total, const float *noise_override, dms_step_stats *st, dms_err *err) {
    const dms_backend *be = tr->be;
    memset(st, 0, sizeof *st);
    float *zero = calloc(tr->n_grad ? tr->n_grad : 1, sizeof(float));
    be->upload(be->ctx, tr->grad_arena, zero, sizeof(float) * tr->n_grad);
    free(zero);
    if (kd_tokens_total < 1) kd_tokens_total = 1;
    const float cr = dms_cr_at(&tr->cfg, (int)step);
    st->target = 1.0 - 1.0 / cr;
    const double per_row_decisions = (double)tr->L * tr->T * tr->KV;
    for (int r = 0; r < n_rows; r++) {
        if (row_setup(tr, &rows[r], kd_tokens_total, step, noise_override, r, err) != 0) return -1;
        teacher_forward(tr);
        double per_layer[DMS_MAX_LAYERS] = {0};
        double frac = student_forward(tr, per_layer) / per_row_decisions;
        for (int l = 0; l < tr->L; l++) st->frac_layer[l] += per_layer[l] / ((double)tr->T * tr->KV) / rows_total;
        st->frac += frac / rows_total;
        /* compression, clamped per row, averaged over the global batch */
        const double comp = frac < st->target ? st->target - frac : 0.0;
        st->comp += comp / rows_total;
        const float dhard =
            comp > 0 ? (float)(-tr->cfg.compression_weight / (per_row_decisions * (double)rows_total)) : 0.0f;
        st->kd += kd_backward(tr);
        be->rmsnorm_bwd(be->ctx, tr->dx, NULL, tr->dx, tr->xs + (size_t)tr->L * tr->T * tr->d, tr->m->final_norm,
                        tr->T, tr->d, tr->m->cfg.rms_eps);
        for (int l = tr->L - 1; l >= 0; l--) layer_backward(tr, l, dhard);
    }
    st->kd_tokens = kd_tokens_total;
    finish_stats(tr, st);
    return 0;
}

int dms_trainer_reduce(dms_trainer *tr, dms_comm *comm, dms_step_stats *st, dms_err *err) {
    if (comm->size == 1) return 0;
    if (comm->allreduce_f32(comm, tr->grad_arena, tr->n_grad, err) != 0) return -1;
    double v[3 + DMS_MAX_LAYERS];
    v[0] = st->kd;
    v[1] = st->comp;
    v[2] = st->frac;
    memcpy(v + 3, st->frac_layer, sizeof(double) * (size_t)tr->L);
    if (comm->allreduce_f64(comm, v, 3 + (size_t)tr->L, err) != 0) return -1;
    st->kd = v[0];
    st->comp = v[1];
    st->frac = v[2];
    memcpy(st->frac_layer, v + 3, sizeof(double) * (size_t)tr->L);
    finish_stats(tr, st);
    return 0;
}

void dms_trainer_apply(dms_trainer *tr, int64_t step, dms_step_stats *st) {
    const dms_backend *be = tr->be;
    const dms_train_config *c = &tr->cfg;
    float clip = 1.0f;
    if (c->grad_clip > 0 && st->grad_norm > c->grad_clip) clip = (float)(c->grad_clip / st->grad_norm);
    const float lr = dms_lr_at(c, (int)step);
    for (int i = 0; i < tr->n_params; i++) {
        dms_param *p = &tr->params[i];
        be->adamw(be->ctx, p->p, p->g, p->m, p->v, p->n, lr, c->beta1, c->beta2, c->adam_eps, c->weight_decay,
                  (int)step + 1, clip);
    }
    dms_trainer_sync_params(tr);
}

void dms_trainer_sync_params(dms_trainer *tr) {
    if (tr->cfg.variant == DMS_VARIANT_NEURON)
        for (int l = 0; l < tr->L; l++) neuron_rows_copy(tr, l, tr->pq_rows[l]->p, 1);
}
