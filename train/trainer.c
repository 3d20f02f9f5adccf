/* trainer.c - the DMS training step (trainer.h): teacher and student
 * forward passes through the model's one layer function (model/layer.h)
 * with a packed-row attention strategy, chunked KD through the LM head, the
 * compression loss, the backward pass layer by layer with recompute, the
 * global grad-norm clip and AdamW. Conventions follow DESIGN.md section 1
 * and docs/dms_reference_notes.md: per-document positions and masks,
 * decisions emitted by token j+1 about key j, soft log-keep bias outside
 * the window, straight-through hard decisions in the compression loss
 * (clamped per row), KL(student || teacher) over tokens whose input is not
 * EOS; optionally, attention guidance (targets for the decisions from the
 * teacher's future attention). Per-step statistics stay on the backend
 * until one read per step. */
#include "train/trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/arena.h"
#include "kernels/backend_check.h"
#include "model/layer.h"
#include "train/progress.h"
#include "train/trainer_testing.h"

static const char *const lora_names[DMS_LORA_N] = {"q_proj", "k_proj", "v_proj", "o_proj"};

/* Layout of the per-step statistics on the backend (doubles): then L
 * per-layer decision counts from ST_LAYER0, then L per-layer counts of the
 * tokens the inference rule drops (ST_LAYER0 + L), then L x KV per-head
 * counts of the step (st_head), then, when the compression loss is per
 * head, L x KV per-head counts of the current row (st_head_row). */
enum { ST_KD = 0, ST_COMP, ST_GUIDE, ST_ROW_COUNT, ST_LAYER0 };

/* The attention strategy of training rows: DMS attention over the packed
 * row, with the delayed-eviction bias from this layer's decisions when
 * student. count: add the hard decisions to the step statistics (the
 * student's forward; off in the backward's recompute, which, with
 * backward_attention keep, takes the forward's output instead of running
 * the attention again). */
typedef struct train_attn {
    dms_attn base;
    dms_trainer *tr;
    int count;
} train_attn;

struct dms_trainer {
    dms_model *m;
    const dms_backend *be;
    dms_train_config cfg;
    int T, L, d, H, KV, hd, ff, V;
    int n_params;
    dms_param *params;
    float *grad_arena;  /* every parameter's gradient, contiguous: one all-reduce */
    size_t n_grad;
    /* per layer: the parameters that are this layer's heads and LoRA */
    dms_param **p_wa, **p_norm, **p_rows;
    dms_param *(*p_lora_a)[DMS_LORA_N], *(*p_lora_b)[DMS_LORA_N];
    dms_arena arena;    /* everything below, and the Adam moments */
    dms_layer_acts acts;
    float *xs;          /* [(L+1), T, d] student layer inputs */
    float *h_teacher;   /* [T, d] teacher final hidden (after the final norm) */
    float *h_student;   /* [T, d] */
    int32_t *ids, *seg;
    float *kd_w;        /* [T] KD weight per token */
    float *kv_w;        /* [T, KV] 1 where token t's decision drops t-1 by the end of its document */
    float *noise;       /* [L, T, KV] this row's noise */
    float *u, *logkeep, *hard; /* [T, KV] decisions of the current layer */
    float *dx, *dxmid, *dtmp, *dff1, *dff2, *datt, *dq, *dk, *dv, *dlogkeep, *dzraw, *dcol, *lora_dr;
    float *zs, *zt, *kd_rows;  /* KD chunk */
    double *stats;      /* ST_* */
    float tau;          /* this step's temperature (dms_tau_at) */
    float *dhard;       /* [L, KV] dLoss/d(each straight-through decision) of the current row */
    float *head_sel;    /* [KV][T, KV] one-hot column masks: per-head counts */
    double *head_frac;  /* [L, KV] host: each head's flagged fraction in the last step */
    double *host_stats;
    const float *test_noise;   /* test seam: fixed [test_noise_rows, L, T, KV] noise */
    int test_noise_rows;
    train_attn teacher, student, recompute;
    /* attention guidance (cfg.guide_weight > 0): the teacher's future
     * attention maxima [L, T, KV], and the eviction targets [L, T, KV]
     * (1 = evict) set from them on the host (docs/training.md) */
    float *imp, *guide_y;
    /* backward_attention keep: the student's attention output [L, T, H*hd]
     * and log-sum-exp [L, T, H] of every layer of the current row, which
     * the backward's recompute takes instead of running the attention */
    float *att_keep, *lse_keep;
    float *imp_host, *guide_y_host, *rank_buf;
    double *lane_host;  /* [L, KV] host: the student's flagged decisions per lane on the row (guide_rank "lane") */
    float *kvw_host;    /* [T, KV] host: the current row's kv_w (row_setup builds it here) */
    float guide_w;      /* this step's guidance weight (0: off this step) */
    float guide_coef;   /* the current row's per-decision coefficient (guide_targets) */
    dms_comm *overlap;  /* dms_trainer_overlap: sums started in the backward, or NULL */
    size_t overlap_n;   /* floats whose sum the current step has started */
    double *phase_s;    /* dms_trainer_time_phases: seconds per phase, or NULL */
    double phase_t0;    /* when the phase now running began (set at the start of each dms_trainer_grads) */
};

const char *dms_phase_name(int phase) {
    static const char *const names[DMS_PHASE_N] = {"setup", "teacher", "student", "kd", "backward"};
    return phase >= 0 && phase < DMS_PHASE_N ? names[phase] : "?";
}

void dms_trainer_time_phases(dms_trainer *tr, double *phase_s) { tr->phase_s = phase_s; }

/* Closes phase `ph` (a no-op unless timing): the backend's queued work is
 * waited for, so the time is the phase's own. */
static void phase_end(dms_trainer *tr, int ph) {
    if (!tr->phase_s) return;
    tr->be->sync(tr->be->ctx);
    const double t = dms_now_s();
    tr->phase_s[ph] += t - tr->phase_t0;
    tr->phase_t0 = t;
}

int dms_trainer_n_params(const dms_trainer *tr) { return tr->n_params; }
const dms_backend *dms_trainer_backend(const dms_trainer *tr) { return tr->be; }
dms_param *dms_trainer_param(dms_trainer *tr, int i) { return &tr->params[i]; }
void dms_trainer_test_fix_noise(dms_trainer *tr, const float *noise) { dms_trainer_test_fix_noise_rows(tr, noise, 1); }
void dms_trainer_test_fix_noise_rows(dms_trainer *tr, const float *noise, int n_rows) {
    tr->test_noise = noise;
    tr->test_noise_rows = n_rows > 0 ? n_rows : 1;
}

/* where the counts of (layer l, KV head h) live in stats: over the step,
 * and over the current row (per-head compression loss only) */
static size_t st_head(const dms_trainer *tr, int l, int h) {
    return ST_LAYER0 + 2 * (size_t)tr->L + (size_t)l * tr->KV + h;
}
static size_t st_head_row(const dms_trainer *tr, int l, int h) { return st_head(tr, tr->L + l, h); }
static size_t n_stats(const dms_trainer *tr) { return st_head(tr, 2 * tr->L, 0); }
/* whether the student's forward counts each head's decisions per row too */
static int counts_per_row(const dms_trainer *tr) {
    return tr->cfg.compression_per == DMS_COMP_PER_HEAD ||
           (tr->guide_w > 0.0f && tr->cfg.guide_rank == DMS_GUIDE_PER_LANE);
}

static void train_attend(dms_attn *self, const dms_model *m, int l, dms_layer_acts *a, int n) {
    train_attn *s = (train_attn *)self;
    dms_trainer *tr = s->tr;
    const dms_backend *be = tr->be;
    const dms_dms_config *dc = &m->cfg.dms;
    const size_t TK = (size_t)n * tr->KV;
    const float *log_keep = NULL;
    if (self->student) {
        be->dms_decide(be->ctx, tr->u, tr->logkeep, tr->hard, a->zraw, tr->noise + (size_t)l * TK, tr->seg, a->pos,
                       dc->sink_tokens, n, tr->KV,
                       dc->alpha_scale, dc->alpha_offset, tr->tau, dc->alpha_per_layer);
        if (s->count) {
            be->sum_acc(be->ctx, tr->stats + ST_LAYER0 + l, tr->hard, NULL, TK);
            be->sum_acc(be->ctx, tr->stats + ST_ROW_COUNT, tr->hard, NULL, TK);
            be->sum_acc(be->ctx, tr->stats + ST_LAYER0 + tr->L + l, tr->hard, tr->kv_w, TK);
            for (int h = 0; h < tr->KV; h++) {
                const float *sel = tr->head_sel + h * TK;
                be->sum_acc(be->ctx, tr->stats + st_head(tr, l, h), tr->hard, sel, TK);
                if (counts_per_row(tr)) be->sum_acc(be->ctx, tr->stats + st_head_row(tr, l, h), tr->hard, sel, TK);
            }
        }
        log_keep = tr->logkeep;
    }
    float *att_l = NULL, *lse_l = NULL; /* this layer's kept output (student, backward_attention keep) */
    if (self->student && tr->att_keep) {
        att_l = tr->att_keep + (size_t)l * tr->T * tr->H * tr->hd;
        lse_l = tr->lse_keep + (size_t)l * tr->T * tr->H;
    }
    if (att_l && !s->count) { /* the backward's recompute: the forward's output, bit for bit */
        dms_copy_f32(be, a->att, att_l, (size_t)n * tr->H * tr->hd);
        dms_copy_f32(be, a->lse, lse_l, (size_t)n * tr->H);
        return;
    }
    be->attention_dms_fwd(be->ctx, a->att, a->lse, a->q, a->k, a->v, log_keep, tr->seg, n, tr->H, tr->KV, tr->hd,
                          dc->window, 1.0f / sqrtf((float)tr->hd));
    if (att_l) {
        dms_copy_f32(be, att_l, a->att, (size_t)n * tr->H * tr->hd);
        dms_copy_f32(be, lse_l, a->lse, (size_t)n * tr->H);
    }
    if (!self->student && tr->guide_w > 0.0f)
        be->attention_future_max(be->ctx, tr->imp + (size_t)l * TK, a->q, a->k,
                                 tr->cfg.guide_score == DMS_GUIDE_ATTENTION_VALUE ? a->v : NULL, a->lse, tr->seg, n,
                                 tr->H, tr->KV, tr->hd, dc->window, 1.0f / sqrtf((float)tr->hd),
                                 tr->cfg.guide_reduce == DMS_GUIDE_MEAN);
}

static dms_param *add_param(dms_trainer *tr, const char *name, dms_mat w) {
    dms_param *p = &tr->params[tr->n_params++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->rows = w.rows;
    p->cols = w.cols;
    p->n = (size_t)w.rows * (size_t)w.cols;
    p->p = w.data;
    p->g = NULL; /* carved from the gradient arena once every tensor is known */
    p->m = dms_arena_f32(&tr->arena, p->n);
    p->v = dms_arena_f32(&tr->arena, p->n);
    return p;
}

/* A vector parameter (cols = 0 in checkpoints). */
static dms_param *add_vec_param(dms_trainer *tr, const char *name, float *data, int n) {
    dms_param *p = add_param(tr, name, (dms_mat){data, DMS_F32, n, 1});
    p->cols = 0;
    return p;
}

static int alloc_activations(dms_trainer *tr) {
    dms_arena *A = &tr->arena;
    const size_t T = (size_t)tr->T, d = (size_t)tr->d, L = (size_t)tr->L, KV = (size_t)tr->KV,
                 qd = (size_t)tr->H * tr->hd, kvd = KV * tr->hd, ff = (size_t)tr->ff;
    dms_layer_acts_init(&tr->acts, A, tr->m, tr->T, 1);
    tr->xs = dms_arena_f32(A, (L + 1) * T * d);
    tr->h_teacher = dms_arena_f32(A, T * d);
    tr->h_student = dms_arena_f32(A, T * d);
    tr->ids = dms_arena_i32(A, T);
    tr->seg = dms_arena_i32(A, T);
    tr->kd_w = dms_arena_f32(A, T);
    tr->kv_w = dms_arena_f32(A, T * KV);
    tr->noise = dms_arena_f32(A, L * T * KV);
    tr->u = dms_arena_f32(A, T * KV);
    tr->logkeep = dms_arena_f32(A, T * KV);
    tr->hard = dms_arena_f32(A, T * KV);
    tr->dx = dms_arena_f32(A, T * d);
    tr->dxmid = dms_arena_f32(A, T * d);
    tr->dtmp = dms_arena_f32(A, T * d);
    tr->dff1 = dms_arena_f32(A, T * ff);
    tr->dff2 = dms_arena_f32(A, T * ff);
    tr->datt = dms_arena_f32(A, T * qd);
    tr->dq = dms_arena_f32(A, T * qd);
    tr->dk = dms_arena_f32(A, T * kvd);
    tr->dv = dms_arena_f32(A, T * kvd);
    tr->dlogkeep = dms_arena_f32(A, T * KV);
    tr->dzraw = dms_arena_f32(A, T * KV);
    tr->dcol = dms_arena_f32(A, T * KV);
    if (tr->m->lora_rank > 0) tr->lora_dr = dms_arena_f32(A, T * (size_t)tr->m->lora_rank);
    const size_t chunk = (size_t)(tr->cfg.kd_chunk < tr->T ? tr->cfg.kd_chunk : tr->T);
    tr->zs = dms_arena_f32(A, chunk * (size_t)tr->V);
    tr->zt = dms_arena_f32(A, chunk * (size_t)tr->V);
    tr->kd_rows = dms_arena_f32(A, chunk);
    if (tr->cfg.backward_attention == DMS_ATT_KEEP) {
        tr->att_keep = dms_arena_f32(A, L * T * qd);
        tr->lse_keep = dms_arena_f32(A, L * T * (size_t)tr->H);
    }
    tr->stats = dms_arena_f64(A, n_stats(tr));
    tr->dhard = dms_arena_f32(A, L * KV);
    tr->head_sel = dms_arena_f32(A, KV * T * KV);
    tr->host_stats = malloc(sizeof(double) * n_stats(tr));
    tr->head_frac = calloc(L * KV, sizeof(double));
    tr->kvw_host = malloc(sizeof(float) * T * KV);
    int ok = tr->host_stats && tr->head_frac && tr->kvw_host;
    if (tr->cfg.guide_weight > 0) {
        tr->imp = dms_arena_f32(A, L * T * KV);
        tr->guide_y = dms_arena_f32(A, L * T * KV);
        tr->imp_host = malloc(sizeof(float) * L * T * KV);
        tr->guide_y_host = malloc(sizeof(float) * L * T * KV);
        tr->rank_buf = malloc(sizeof(float) * L * T * KV);
        tr->lane_host = malloc(sizeof(double) * L * KV);
        ok = ok && tr->imp_host && tr->guide_y_host && tr->rank_buf && tr->lane_host;
    }
    return ok ? 0 : -1;
}

int dms_trainer_prepare_model(dms_model *m, const dms_train_config *cfg, dms_err *err) {
    /* the run's DMS settings become the model's dms_* fields */
    dms_dms_config dc = m->cfg.dms;
    dc.separate_alpha = cfg->variant == DMS_VARIANT_ADAPTER;
    dc.alpha_per_layer = cfg->alpha_per == DMS_ALPHA_PER_LAYER;
    dc.window = cfg->window;
    dc.tau = cfg->tau;
    dc.alpha_scale = cfg->alpha_scale;
    dc.alpha_offset = cfg->alpha_offset;
    dc.cr = cfg->cr_final;
    dc.sink_tokens = cfg->sinks;
    if (dms_model_init_heads(m, &dc, err) != 0) return -1;
    return dms_model_add_lora(m, cfg->lora_rank, cfg->lora_alpha, cfg->seed, err);
}

dms_trainer *dms_trainer_create(dms_model *m, const dms_train_config *cfg, dms_err *err) {
    const dms_backend *be = m->be;
    if (dms_backend_require(be, 1, err) != 0) return NULL;
    if (m->cfg.n_layers > DMS_MAX_LAYERS) {
        dms_errf(err, "%s: %d layers (at most %d supported)", m->path, m->cfg.n_layers, DMS_MAX_LAYERS);
        return NULL;
    }
    if (dms_trainer_prepare_model(m, cfg, err) != 0) return NULL;

    dms_trainer *tr = calloc(1, sizeof *tr);
    if (!tr) {
        dms_errf(err, "out of memory");
        return NULL;
    }
    tr->m = m;
    tr->be = be;
    tr->cfg = *cfg;
    tr->tau = dms_tau_at(cfg, 0);
    const dms_config *c = &m->cfg;
    tr->T = cfg->max_len;
    tr->L = c->n_layers;
    tr->d = c->hidden;
    tr->H = c->n_heads;
    tr->KV = c->n_kv_heads;
    tr->hd = c->head_dim;
    tr->ff = c->intermediate;
    tr->V = c->vocab;
    dms_arena_init(&tr->arena, be);
    const size_t L = (size_t)tr->L;
    tr->params = calloc((2 + (m->lora_rank > 0 ? 2 * DMS_LORA_N : 0)) * L, sizeof(dms_param));
    tr->p_wa = calloc(L, sizeof(dms_param *));
    tr->p_norm = calloc(L, sizeof(dms_param *));
    tr->p_rows = calloc(L, sizeof(dms_param *));
    tr->p_lora_a = calloc(L, sizeof *tr->p_lora_a);
    tr->p_lora_b = calloc(L, sizeof *tr->p_lora_b);
    if (!tr->params || !tr->p_wa || !tr->p_norm || !tr->p_rows || !tr->p_lora_a || !tr->p_lora_b) {
        dms_trainer_free(tr);
        dms_errf(err, "out of memory");
        return NULL;
    }
    char name[128];
    for (int l = 0; l < tr->L; l++) {
        const dms_heads *h = &m->layers[l].heads;
        if (cfg->variant == DMS_VARIANT_ADAPTER) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.dms_proj_alpha.weight", l);
            tr->p_wa[l] = add_param(tr, name, h->w_a);
            snprintf(name, sizeof name, "model.layers.%d.self_attn.dms_proj_alpha_norm.weight", l);
            tr->p_norm[l] = add_vec_param(tr, name, h->w_a_norm, tr->d);
        } else {
            /* the decision rows of q_proj (exported merged into q_proj) */
            snprintf(name, sizeof name, "model.layers.%d.self_attn.q_proj.dms_rows", l);
            tr->p_rows[l] = add_param(tr, name, h->q_rows);
        }
    }
    for (int l = 0; l < tr->L && m->lora_rank > 0; l++)
        for (int j = 0; j < DMS_LORA_N; j++) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.lora_A.weight", l, lora_names[j]);
            tr->p_lora_a[l][j] = add_param(tr, name, m->layers[l].lora[j].a);
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.lora_B.weight", l, lora_names[j]);
            tr->p_lora_b[l][j] = add_param(tr, name, m->layers[l].lora[j].b);
        }
    for (int i = 0; i < tr->n_params; i++) tr->n_grad += tr->params[i].n;
    tr->grad_arena = dms_arena_f32(&tr->arena, tr->n_grad);
    for (size_t i = 0, off = 0; tr->grad_arena && i < (size_t)tr->n_params; off += tr->params[i].n, i++)
        tr->params[i].g = tr->grad_arena + off;
    const int host_ok = alloc_activations(tr) == 0;
    char what[1100];
    snprintf(what, sizeof what, "%s: training buffers for rows of %d tokens", m->path, cfg->max_len);
    if (dms_arena_check(&tr->arena, what, err) != 0 || !host_ok) {
        if (!host_ok) dms_errf(err, "out of memory");
        dms_trainer_free(tr);
        return NULL;
    }
    { /* column h of [T, KV] selects KV head h */
        const size_t TK = (size_t)tr->T * tr->KV;
        float *sel = calloc((size_t)tr->KV * TK, sizeof(float));
        if (!sel) {
            dms_trainer_free(tr);
            dms_errf(err, "out of memory");
            return NULL;
        }
        for (int h = 0; h < tr->KV; h++)
            for (int t = 0; t < tr->T; t++) sel[(size_t)h * TK + (size_t)t * tr->KV + h] = 1.0f;
        dms_upload_f32(be, tr->head_sel, sel, (size_t)tr->KV * TK);
        free(sel);
    }
    tr->teacher = (train_attn){{0, train_attend, 0.0f}, tr, 0};
    tr->student = (train_attn){{1, train_attend, 0.0f}, tr, 1};
    tr->recompute = (train_attn){{1, train_attend, 0.0f}, tr, 0};
    return tr;
}

void dms_trainer_free(dms_trainer *tr) {
    if (!tr) return;
    if (tr->arena.be) dms_arena_free(&tr->arena);
    free(tr->params);
    free(tr->p_wa);
    free(tr->p_norm);
    free(tr->p_rows);
    free(tr->p_lora_a);
    free(tr->p_lora_b);
    free(tr->host_stats);
    free(tr->head_frac);
    free(tr->kvw_host);
    free(tr->imp_host);
    free(tr->guide_y_host);
    free(tr->lane_host);
    free(tr->rank_buf);
    free(tr);
}

/* ------------------------------------------------------------------ */
/* forward                                                              */
/* ------------------------------------------------------------------ */

/* Teacher: the frozen base model (heads off, LoRA off, no eviction); keeps
 * only the final hidden states. */
static void teacher_forward(dms_trainer *tr) {
    const dms_backend *be = tr->be;
    const size_t Td = (size_t)tr->T * tr->d;
    float *x = tr->xs, *y = tr->xs + Td; /* the student's storage as ping-pong */
    be->embedding(be->ctx, x, &tr->m->embed, tr->ids, tr->T);
    for (int l = 0; l < tr->L; l++) {
        dms_layer_forward(tr->m, l, x, y, &tr->acts, tr->T, &tr->teacher.base);
        float *t = x;
        x = y;
        y = t;
    }
    be->rmsnorm(be->ctx, tr->h_teacher, x, tr->m->final_norm, tr->T, tr->d, tr->m->cfg.rms_eps);
}

/* Student: eviction on; keeps every layer input in xs; the hard decisions
 * are counted into the step statistics by the strategy. */
static void student_forward(dms_trainer *tr) {
    const dms_backend *be = tr->be;
    const size_t Td = (size_t)tr->T * tr->d;
    be->embedding(be->ctx, tr->xs, &tr->m->embed, tr->ids, tr->T);
    for (int l = 0; l < tr->L; l++)
        dms_layer_forward(tr->m, l, tr->xs + (size_t)l * Td, tr->xs + (size_t)(l + 1) * Td, &tr->acts, tr->T,
                          &tr->student.base);
    be->rmsnorm(be->ctx, tr->h_student, tr->xs + (size_t)tr->L * Td, tr->m->final_norm, tr->T, tr->d,
                tr->m->cfg.rms_eps);
}

/* KD over the row in chunks through the LM head: writes dLoss/dh_student
 * into tr->dx and adds the weighted KD sum of the row to the statistics. */
static void kd_backward(dms_trainer *tr) {
    const dms_backend *be = tr->be;
    void *ctx = be->ctx;
    const int T = tr->T, V = tr->V, d = tr->d;
    const int chunk = tr->cfg.kd_chunk < T ? tr->cfg.kd_chunk : T;
    for (int r0 = 0; r0 < T; r0 += chunk) {
        const int rows = T - r0 < chunk ? T - r0 : chunk;
        be->matmul(ctx, tr->zs, tr->h_student + (size_t)r0 * d, &tr->m->lm_head, NULL, rows);
        be->matmul(ctx, tr->zt, tr->h_teacher + (size_t)r0 * d, &tr->m->lm_head, NULL, rows);
        be->kd_chunk(ctx, tr->kd_rows, tr->zs, tr->zs, tr->zt, tr->kd_w + r0, rows, V, (int)tr->cfg.kd);
        be->matmul_bwd_x(ctx, tr->dx + (size_t)r0 * d, tr->zs, &tr->m->lm_head, rows, 0);
        be->sum_acc(ctx, tr->stats + ST_KD, tr->kd_rows, tr->kd_w + r0, (size_t)rows);
    }
}

const float *dms_trainer_test_kept_attention(const dms_trainer *tr) { return tr->att_keep; }

void dms_trainer_test_student_logits(dms_trainer *tr, float *out) {
    const dms_backend *be = tr->be;
    const int T = tr->T, V = tr->V, chunk = tr->cfg.kd_chunk < T ? tr->cfg.kd_chunk : T;
    for (int r0 = 0; r0 < T; r0 += chunk) {
        const int rows = T - r0 < chunk ? T - r0 : chunk;
        be->matmul(be->ctx, tr->zs, tr->h_student + (size_t)r0 * tr->d, &tr->m->lm_head, NULL, rows);
        dms_download_f32(be, out + (size_t)r0 * V, tr->zs, (size_t)rows * V);
    }
}

/* ------------------------------------------------------------------ */
/* backward                                                             */
/* ------------------------------------------------------------------ */

/* LoRA branch j of layer l given dy: dB += s dy^T (A x), dA += s (dy B)^T x,
 * dx += s (dy B) A. Scales the kept A x in place (the recompute renews it). */
static void lora_backward(dms_trainer *tr, int l, int j, const float *x, const float *dy, float *dx) {
    const dms_backend *be = tr->be;
    void *ctx = be->ctx;
    const dms_lora *lo = &tr->m->layers[l].lora[j];
    const dms_param *A = tr->p_lora_a[l][j], *B = tr->p_lora_b[l][j];
    const float s = tr->m->lora_scale;
    const size_t Tr = (size_t)tr->T * tr->m->lora_rank;
    be->scale(ctx, tr->acts.lora_xa[j], s, Tr);
    be->matmul_bwd_w(ctx, B->g, NULL, dy, tr->acts.lora_xa[j], tr->T, B->rows, B->cols);
    be->matmul_bwd_x(ctx, tr->lora_dr, dy, &lo->b, tr->T, 0);
    be->scale(ctx, tr->lora_dr, s, Tr);
    be->matmul_bwd_w(ctx, A->g, NULL, tr->lora_dr, x, tr->T, A->rows, A->cols);
    be->matmul_bwd_x(ctx, dx, tr->lora_dr, &lo->a, tr->T, 1);
}

/* Given dL/d(layer output) in tr->dx, recompute layer l from its stored
 * input and replace tr->dx with dL/d(layer input), accumulating the
 * gradients of this layer's trainable tensors. */
static void layer_backward(dms_trainer *tr, int l) {
    const dms_backend *be = tr->be;
    void *ctx = be->ctx;
    const dms_model *m = tr->m;
    const dms_config *c = &m->cfg;
    const dms_layer *Ly = &m->layers[l];
    dms_layer_acts *a = &tr->acts;
    const int T = tr->T, d = tr->d, H = tr->H, KV = tr->KV, hd = tr->hd, ff = tr->ff;
    const size_t Td = (size_t)T * d;
    const int neuron = !c->dms.separate_alpha, lora = m->lora_rank > 0;
    const float *x_in = tr->xs + (size_t)l * Td;

    /* recompute up to the MLP's gate and up products (the output is not
     * needed: xs[l+1] already holds it; with backward_attention keep the
     * attention is the forward's too) */
    dms_layer_forward(m, l, x_in, NULL, a, T, &tr->recompute.base);

    /* MLP: x_out = xmid + down(swiglu(gate(n2), up(n2))) */
    dms_copy_f32(be, tr->dxmid, tr->dx, Td);
    be->matmul_bwd_x(ctx, tr->dff1, tr->dx, &Ly->w_down, T, 0);
    be->swiglu_bwd(ctx, tr->dff1, tr->dff2, tr->dff1, a->g, a->up, (size_t)T * ff);
    be->matmul_bwd_x(ctx, tr->dtmp, tr->dff1, &Ly->w_gate, T, 0);
    be->matmul_bwd_x(ctx, tr->dtmp, tr->dff2, &Ly->w_up, T, 1);
    be->rmsnorm_bwd(ctx, tr->dtmp, NULL, tr->dtmp, a->xmid, Ly->ffn_norm, T, d, c->rms_eps);
    be->add(ctx, tr->dxmid, tr->dtmp, Td);

    /* attention: xmid = x_in + o(att) */
    be->matmul_bwd_x(ctx, tr->datt, tr->dxmid, &Ly->wo, T, 0);
    if (lora) lora_backward(tr, l, DMS_LORA_O, a->att, tr->dxmid, tr->datt);
    be->attention_dms_bwd(ctx, tr->dq, tr->dk, tr->dv, tr->dlogkeep, tr->datt, a->att, a->lse, a->q, a->k, a->v,
                          tr->logkeep, tr->seg, T, H, KV, hd, c->dms.window, 1.0f / sqrtf((float)hd));
    be->dms_decide_bwd(ctx, tr->dzraw, tr->u, tr->dlogkeep, tr->dhard + (size_t)l * KV, tr->seg, a->pos, c->dms.sink_tokens, T, KV,
                       c->dms.alpha_scale, tr->tau,
                       c->dms.alpha_per_layer);
    if (tr->guide_w > 0.0f && tr->guide_coef != 0.0f)
        be->dms_guide_grad(ctx, tr->dzraw, tr->stats + ST_GUIDE, a->zraw, tr->guide_y + (size_t)l * T * KV, tr->kv_w,
                           T, KV, c->dms.alpha_scale, c->dms.alpha_offset, tr->guide_coef, c->dms.alpha_per_layer);
    const float g = neuron ? tr->student.base.neuron_keep : 0.0f; /* warm-up fade (layer.c) */
    if (neuron) be->dms_neuron_take(ctx, NULL, tr->dq, T, H, KV, hd, g); /* zeroed (faded) after RoPE */
    be->rope_bwd(ctx, tr->dq, a->pos, m->inv_freq, T, H, hd);
    be->rope_bwd(ctx, tr->dk, a->pos, m->inv_freq, T, KV, hd);
    /* the channel feeds z (scaled by 1 - g) and, faded by g, attention */
    if (neuron && g > 0.0f) be->scale(ctx, tr->dzraw, 1.0f - g, (size_t)T * KV);
    if (neuron) be->dms_neuron_put(ctx, tr->dq, tr->dzraw, T, H, KV, hd, g);
    if (c->qk_norm) {
        be->rmsnorm_bwd(ctx, tr->dq, NULL, tr->dq, a->qpre, Ly->q_norm, T * H, hd, c->rms_eps);
        be->rmsnorm_bwd(ctx, tr->dk, NULL, tr->dk, a->kpre, Ly->k_norm, T * KV, hd, c->rms_eps);
    }
    /* dq, dk, dv are now gradients w.r.t. the projections' outputs */
    be->matmul_bwd_x(ctx, tr->dtmp, tr->dk, &Ly->wk, T, 0);
    be->matmul_bwd_x(ctx, tr->dtmp, tr->dv, &Ly->wv, T, 1);
    if (lora) {
        lora_backward(tr, l, DMS_LORA_Q, a->n1, tr->dq, tr->dtmp);
        lora_backward(tr, l, DMS_LORA_K, a->n1, tr->dk, tr->dtmp);
        lora_backward(tr, l, DMS_LORA_V, a->n1, tr->dv, tr->dtmp);
    }
    if (neuron) { /* the decision channel came from the rows, not from q_proj */
        be->dms_neuron_take(ctx, tr->dcol, tr->dq, T, H, KV, hd, 0.0f);
        be->matmul_bwd_w(ctx, tr->p_rows[l]->g, NULL, tr->dcol, a->n1, T, KV, d);
        be->matmul_bwd_x(ctx, tr->dtmp, tr->dcol, &Ly->heads.q_rows, T, 1);
    }
    be->matmul_bwd_x(ctx, tr->dtmp, tr->dq, &Ly->wq, T, 1);
    be->rmsnorm_bwd(ctx, tr->dtmp, NULL, tr->dtmp, x_in, Ly->attn_norm, T, d, c->rms_eps);
    dms_copy_f32(be, tr->dx, tr->dxmid, Td);
    be->add(ctx, tr->dx, tr->dtmp, Td);

    if (!neuron) { /* adapter: z_raw = W_a . RMSNorm_a(x_in) */
        be->matmul_bwd_w(ctx, tr->p_wa[l]->g, NULL, tr->dzraw, a->a, T, KV, d);
        be->matmul_bwd_x(ctx, tr->dtmp, tr->dzraw, &Ly->heads.w_a, T, 0);
        be->rmsnorm_bwd(ctx, tr->dtmp, tr->p_norm[l]->g, tr->dtmp, x_in, Ly->heads.w_a_norm, T, d, c->rms_eps);
        be->add(ctx, tr->dx, tr->dtmp, Td);
    }
}

/* ------------------------------------------------------------------ */

static int row_setup(dms_trainer *tr, const dms_row *row, double kd_tokens_total, int64_t step, int row_index,
                     dms_err *err) {
    const int T = tr->T;
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)T);
    float *w = malloc(sizeof(float) * (size_t)T);
    float *kvw = tr->kvw_host; /* kept on the host too: attention guidance's mask */
    const int32_t eos = tr->m->cfg.eos_id;
    int start = 0, rc = pos && w ? 0 : dms_errf(err, "out of memory");
    for (int t = 0; rc == 0 && t < T; t++) {
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
        pos[t] = t - start + (start == 0 ? row->pos0 : 0); /* a continued document keeps its true positions */
        int counted = (!row->mask || row->mask[t]) && row->ids[t] != eos;
        w[t] = counted ? (float)(1.0 / kd_tokens_total) : 0.0f;
    }
    /* token t's decision flags t-1, which the inference rule drops iff it
     * is still more than `window` behind the last token of its document
     * (and is not one of the document's sink tokens) */
    for (int t = T - 1, end = T - 1; rc == 0 && t >= 0; t--) {
        if (t < T - 1 && row->seg[t + 1] != row->seg[t]) end = t;
        const float v = t >= 1 && row->seg[t - 1] == row->seg[t] && (t - 1) <= end - tr->cfg.window - 1 &&
                                pos[t - 1] >= tr->cfg.sinks
                            ? 1.0f
                            : 0.0f;
        for (int h = 0; h < tr->KV; h++) kvw[(size_t)t * tr->KV + h] = v;
    }
    if (rc == 0) {
        const dms_backend *be = tr->be;
        dms_upload_f32(be, tr->kv_w, kvw, (size_t)T * tr->KV);
        dms_upload_i32(be, tr->ids, row->ids, (size_t)T);
        dms_upload_i32(be, tr->seg, row->seg, (size_t)T);
        dms_upload_i32(be, tr->acts.pos, pos, (size_t)T);
        dms_upload_f32(be, tr->kd_w, w, (size_t)T);
        const size_t TK = (size_t)T * tr->KV;
        if (tr->test_noise)
            dms_upload_f32(be, tr->noise, tr->test_noise + (size_t)(row_index % tr->test_noise_rows) * tr->L * TK,
                           (size_t)tr->L * TK);
        else
            for (int l = 0; l < tr->L; l++)
                be->dms_noise(be->ctx, tr->noise + l * TK, T, tr->KV, tr->cfg.seed, step, l, row->tok0);
    }
    free(pos);
    free(w);
    return rc;
}

static int cmp_f32(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Attention guidance, after the teacher's forward of a row: of the
 * decisions that the inference rule can carry out (kv_w: the key is not a
 * sink and is more than `window` behind its document's last token), the
 * fraction `frac` about the keys with the smallest scores (future attention
 * maxima, or means with guide_reduce "mean"; times the value's l1 norm with
 * guide_score "attention_value") get
 * the target 1 (evict), the others 0; ties go to the lower layer, then the
 * earlier token. Ranked within each layer (guide_rank "layer": every layer
 * evicts the same fraction), over all layers at once ("row": a layer whose
 * keys score low may give up more), or within each (layer, KV head) lane
 * ("lane", after the student's forward: each lane evicts its share of the
 * student's own decisions on the row, shifted to the step's target, so
 * guidance teaches which keys go and leaves how many to the KD). A block (`layers`
 * layers, KV head `head` or all heads if < 0) returns how many decisions it
 * ranked; guide_targets sets the row's per-decision coefficient from their
 * sum: the loss is the mean over those decisions, layers and the step's rows. */
static size_t guide_rank_block(dms_trainer *tr, const float *imp, float *y, int layers, int head, double frac) {
    const size_t TK = (size_t)tr->T * tr->KV, KV = (size_t)tr->KV;
    const size_t i0 = head < 0 ? KV : KV + (size_t)head, di = head < 0 ? 1 : KV;
    size_t n = 0;
    for (int l = 0; l < layers; l++)
        for (size_t i = i0; i < TK; i += di)
            if (tr->kvw_host[i] != 0.0f) tr->rank_buf[n++] = imp[(size_t)l * TK + i - KV]; /* decision t: key t - 1 */
    const size_t k = (size_t)(frac * (double)n);
    if (k == 0) return n;
    qsort(tr->rank_buf, n, sizeof(float), cmp_f32);
    const float thr = tr->rank_buf[k - 1];
    size_t below = 0;
    for (int l = 0; l < layers; l++)
        for (size_t i = i0; i < TK; i += di)
            if (tr->kvw_host[i] != 0.0f && imp[(size_t)l * TK + i - KV] < thr) y[(size_t)l * TK + i] = 1.0f, below++;
    for (int l = 0; l < layers; l++)
        for (size_t i = i0; i < TK && below < k; i += di)
            if (tr->kvw_host[i] != 0.0f && imp[(size_t)l * TK + i - KV] == thr) y[(size_t)l * TK + i] = 1.0f, below++;
    return n;
}

/* guide_rank "lane": each lane's fraction to evict is the student's flagged
 * fraction of the lane on this row plus one shift for all lanes, clipped to
 * [0, 1], the shift chosen (by bisection) so that the lanes' mean is `frac`:
 * while the heads lag the target every lane is pulled up by the same amount,
 * and once they meet it guidance leaves each lane's share where the KD put
 * it (a multiplicative scale would pin a lane that flags nothing at 0). */
static size_t guide_rank_lanes(dms_trainer *tr, double frac) {
    const dms_backend *be = tr->be;
    const int L = tr->L, KV = tr->KV, LK = L * KV;
    const size_t TK = (size_t)tr->T * KV;
    double *row_counts = tr->stats + st_head_row(tr, 0, 0); /* [L, KV], contiguous */
    dms_download_f64(be, tr->lane_host, row_counts, (size_t)LK);
    if (tr->cfg.compression_per != DMS_COMP_PER_HEAD) be->zero_f64(be->ctx, row_counts, (size_t)LK);
    for (int lh = 0; lh < LK; lh++) tr->lane_host[lh] /= tr->T;
    double lo = -1.0, hi = 1.0;
    for (int it = 0; it < 60; it++) {
        const double mid = 0.5 * (lo + hi);
        double mean = 0.0;
        for (int lh = 0; lh < LK; lh++) mean += fmin(1.0, fmax(0.0, tr->lane_host[lh] + mid)) / LK;
        *(mean < frac ? &lo : &hi) = mid;
    }
    size_t n = 0;
    for (int lh = 0; lh < LK; lh++) {
        const double f = fmin(1.0, fmax(0.0, tr->lane_host[lh] + hi));
        const size_t off = (size_t)(lh / KV) * TK;
        n += guide_rank_block(tr, tr->imp_host + off, tr->guide_y_host + off, 1, lh % KV, f);
    }
    return n;
}

static void guide_targets(dms_trainer *tr, double frac, int rows_total) {
    const dms_backend *be = tr->be;
    const int T = tr->T, KV = tr->KV, L = tr->L;
    const size_t TK = (size_t)T * KV;
    dms_download_f32(be, tr->imp_host, tr->imp, (size_t)L * TK);
    memset(tr->guide_y_host, 0, sizeof(float) * (size_t)L * TK);
    size_t n = 0; /* the row's decisions under the mask, all layers */
    if (tr->cfg.guide_rank == DMS_GUIDE_PER_ROW)
        n = guide_rank_block(tr, tr->imp_host, tr->guide_y_host, L, -1, frac);
    else if (tr->cfg.guide_rank == DMS_GUIDE_PER_LANE)
        n = guide_rank_lanes(tr, frac);
    else
        for (int l = 0; l < L; l++)
            n += guide_rank_block(tr, tr->imp_host + (size_t)l * TK, tr->guide_y_host + (size_t)l * TK, 1, -1, frac);
    dms_upload_f32(be, tr->guide_y, tr->guide_y_host, (size_t)L * TK);
    tr->guide_coef = n ? (float)(tr->guide_w / ((double)n * rows_total)) : 0.0f;
}

int dms_trainer_test_guide(const dms_trainer *tr, const float **imp, const float **y, const float **mask) {
    if (!tr->imp_host) return -1;
    *imp = tr->imp_host;
    *y = tr->guide_y_host;
    *mask = tr->kvw_host;
    return 0;
}

double dms_trainer_row_kd_tokens(const dms_trainer *tr, const dms_row *row) {
    double n = 0;
    for (int t = 0; t < tr->T; t++) n += (!row->mask || row->mask[t]) && row->ids[t] != tr->m->cfg.eos_id;
    return n;
}

/* Total loss, gradient norm and finiteness from the (reduced) parts. With
 * with_norm 0 the norm waits for dms_trainer_reduce (0 until then): the
 * gradients are still being summed in place over the ranks. */
static void finish_stats(dms_trainer *tr, dms_step_stats *st, int with_norm) {
    st->loss = st->kd + tr->cfg.compression_weight * st->comp + st->guide;
    st->grad_norm = with_norm ? sqrt(tr->be->sumsq(tr->be->ctx, tr->grad_arena, tr->n_grad)) : 0.0;
    st->finite = isfinite(st->loss) && isfinite(st->grad_norm);
    st->heads_all = st->heads_none = 0;
    for (int lh = 0; lh < tr->L * tr->KV; lh++) {
        st->heads_all += tr->head_frac[lh] > 0.99;
        st->heads_none += tr->head_frac[lh] < 0.01;
    }
}

double dms_trainer_head_frac(const dms_trainer *tr, int l, int h) { return tr->head_frac[(size_t)l * tr->KV + h]; }

void dms_trainer_overlap(dms_trainer *tr, dms_comm *comm) {
    tr->overlap = comm->size > 1 && comm->iallreduce_f32 && comm->wait_all ? comm : NULL;
}

/* Starts the sum over ranks of the gradients of parameters first..last
 * (adjacent in the gradient arena), after the backend's queued work. */
static int overlap_span(dms_trainer *tr, const dms_param *first, const dms_param *last, dms_err *err) {
    const size_t n = (size_t)(last->g + last->n - first->g);
    tr->overlap_n += n;
    void *queue = tr->be->queue ? tr->be->queue(tr->be->ctx) : NULL;
    return tr->overlap->iallreduce_f32(tr->overlap, first->g, n, queue, err);
}

/* Layer l's gradients are final once its backward of the step's last row
 * is queued (no other layer writes them): their sums start here. */
static int overlap_layer(dms_trainer *tr, int l, dms_err *err) {
    const int adapter = tr->cfg.variant == DMS_VARIANT_ADAPTER;
    if (overlap_span(tr, adapter ? tr->p_wa[l] : tr->p_rows[l], adapter ? tr->p_norm[l] : tr->p_rows[l], err) != 0)
        return -1;
    if (tr->m->lora_rank > 0 && overlap_span(tr, tr->p_lora_a[l][0], tr->p_lora_b[l][DMS_LORA_N - 1], err) != 0)
        return -1;
    return 0;
}

int dms_trainer_grads(dms_trainer *tr, const dms_row *rows, int n_rows, int64_t step, double kd_tokens_total,
                      int rows_total, dms_step_stats *st, dms_err *err) {
    const dms_backend *be = tr->be;
    memset(st, 0, sizeof *st);
    be->zero(be->ctx, tr->grad_arena, tr->n_grad);
    be->zero_f64(be->ctx, tr->stats, n_stats(tr));
    tr->overlap_n = 0;
    if (kd_tokens_total < 1) kd_tokens_total = 1;
    const float cr = dms_cr_at(&tr->cfg, (int)step);
    tr->tau = dms_tau_at(&tr->cfg, (int)step);
    tr->guide_w = dms_guide_at(&tr->cfg, (int)step);
    tr->student.base.neuron_keep = tr->recompute.base.neuron_keep = dms_neuron_keep_at(&tr->cfg, (int)step);
    st->target = 1.0 - 1.0 / cr;
    const double per_row_decisions = (double)tr->L * tr->T * tr->KV;
    /* compression = mean over rows of max(0, target - row's mean decision):
     * every decision of a row below target gets -w / (decisions * rows).
     * Per head: the mean over rows, layers and KV heads of max(0, target -
     * that head's mean decision in the row), whose gradient per decision of a
     * head below target is the same coefficient. */
    const float coef = (float)(-tr->cfg.compression_weight / (per_row_decisions * (double)rows_total));
    const int LK = tr->L * tr->KV;
    if (tr->phase_s) {
        tr->be->sync(tr->be->ctx);
        tr->phase_t0 = dms_now_s();
    }
    for (int r = 0; r < n_rows; r++) {
        if (row_setup(tr, &rows[r], kd_tokens_total, step, r, err) != 0) return -1;
        phase_end(tr, DMS_PHASE_SETUP);
        teacher_forward(tr);
        const int lane_guide = tr->guide_w > 0.0f && tr->cfg.guide_rank == DMS_GUIDE_PER_LANE;
        if (tr->guide_w > 0.0f && !lane_guide) guide_targets(tr, st->target, rows_total);
        phase_end(tr, DMS_PHASE_TEACHER);
        student_forward(tr);
        if (lane_guide) guide_targets(tr, st->target, rows_total); /* needs the student's decisions */
        phase_end(tr, DMS_PHASE_STUDENT);
        if (tr->cfg.compression_per == DMS_COMP_PER_HEAD) {
            for (int lh = 0; lh < LK; lh++)
                be->dms_comp_grad(be->ctx, tr->dhard + lh, 1, tr->stats + ST_COMP,
                                  tr->stats + st_head_row(tr, lh / tr->KV, lh % tr->KV), (double)tr->T,
                                  (float)st->target, 1.0f / ((float)rows_total * (float)LK), coef);
            be->zero_f64(be->ctx, tr->stats + ST_ROW_COUNT, 1);
        } else {
            be->dms_comp_grad(be->ctx, tr->dhard, LK, tr->stats + ST_COMP, tr->stats + ST_ROW_COUNT,
                              per_row_decisions, (float)st->target, 1.0f / (float)rows_total, coef);
        }
        kd_backward(tr);
        phase_end(tr, DMS_PHASE_KD);
        be->rmsnorm_bwd(be->ctx, tr->dx, NULL, tr->dx, tr->xs + (size_t)tr->L * tr->T * tr->d, tr->m->final_norm,
                        tr->T, tr->d, tr->m->cfg.rms_eps);
        const int last_row = r == n_rows - 1;
        for (int l = tr->L - 1; l >= 0; l--) {
            layer_backward(tr, l);
            if (last_row && tr->overlap && overlap_layer(tr, l, err) != 0) return -1;
        }
        phase_end(tr, DMS_PHASE_BACKWARD);
    }
    /* the one read of the step's statistics */
    dms_download_f64(be, tr->host_stats, tr->stats, n_stats(tr));
    char msg[256];
    if (be->status(be->ctx, msg, sizeof msg) != 0) return dms_errf(err, "training step %lld: %s", (long long)step, msg);
    st->kd = tr->host_stats[ST_KD];
    st->comp = tr->host_stats[ST_COMP];
    st->guide = tr->host_stats[ST_GUIDE];
    const double per_layer = (double)tr->T * tr->KV * rows_total;
    for (int l = 0; l < tr->L; l++) {
        st->frac_layer[l] = tr->host_stats[ST_LAYER0 + l] / per_layer;
        st->frac += tr->host_stats[ST_LAYER0 + l];
        st->kv_frac_layer[l] = tr->host_stats[ST_LAYER0 + tr->L + l] / per_layer;
        st->kv_frac += tr->host_stats[ST_LAYER0 + tr->L + l];
    }
    st->frac /= per_row_decisions * rows_total;
    st->kv_frac /= per_row_decisions * rows_total;
    for (int lh = 0; lh < tr->L * tr->KV; lh++)
        tr->head_frac[lh] = tr->host_stats[st_head(tr, lh / tr->KV, lh % tr->KV)] / ((double)tr->T * rows_total);
    st->kd_tokens = kd_tokens_total;
    finish_stats(tr, st, !tr->overlap);
    return 0;
}

int dms_trainer_reduce(dms_trainer *tr, dms_comm *comm, dms_step_stats *st, dms_err *err) {
    if (comm->size == 1) return 0;
    if (tr->overlap) { /* the backward started every layer's sum */
        if (tr->overlap_n != tr->n_grad)
            return dms_errf(err, "rank %d: the backward summed %zu of %zu gradient values over ranks", comm->rank,
                            tr->overlap_n, tr->n_grad);
        if (comm->wait_all(comm, err) != 0) return -1;
    } else {
        tr->be->sync(tr->be->ctx); /* the backward's kernels are done before another stream (NCCL's) reads them */
        if (comm->allreduce_f32(comm, tr->grad_arena, tr->n_grad, err) != 0) return -1;
    }
    double v[5 + 2 * DMS_MAX_LAYERS];
    const size_t L = (size_t)tr->L;
    v[0] = st->kd;
    v[1] = st->comp;
    v[2] = st->frac;
    v[3] = st->kv_frac;
    v[4] = st->guide;
    memcpy(v + 5, st->frac_layer, sizeof(double) * L);
    memcpy(v + 5 + L, st->kv_frac_layer, sizeof(double) * L);
    if (comm->allreduce_f64(comm, v, 5 + 2 * L, err) != 0) return -1;
    st->kd = v[0];
    st->comp = v[1];
    st->frac = v[2];
    st->kv_frac = v[3];
    st->guide = v[4];
    memcpy(st->frac_layer, v + 5, sizeof(double) * L);
    memcpy(st->kv_frac_layer, v + 5 + L, sizeof(double) * L);
    if (comm->allreduce_f64(comm, tr->head_frac, L * tr->KV, err) != 0) return -1;
    finish_stats(tr, st, 1);
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
}
