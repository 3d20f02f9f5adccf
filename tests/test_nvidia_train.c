/* test_nvidia_train.c - our training step against NVIDIA Model-Optimizer's
 * own DMS training code (fixture tests/fixtures/nvidia/train_adapter.safetensors,
 * made by tests/reference/nvidia/make_nvidia_train_fixtures.py from their
 * distillation_forward: their gating with noise, training attention,
 * distillation loss and compression loss, in float64). Two rows in
 * `reference` packing (one segment, positions 0..T-1, EOS inside), the
 * adapter model of tests/fixtures/nvidia/adapter, NVIDIA's stored noise,
 * alpha_per head and layer: the student logits, the KD and compression
 * losses and the gradient of every adapter tensor, layer by layer, must
 * match to 1e-4 (relative to the largest value of each tensor). The
 * fixture's own float32 floor (NVIDIA's code in float32) is below 5e-5.
 * The test also shows that it can tell: counting EOS inputs in the KD or
 * clamping the batch mean instead of each row moves the result far
 * beyond the tolerance. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/safetensors.h"
#include "tests/check.h"
#include "train/trainer.h"
#include "train/trainer_testing.h"

#define TOL 1e-4

static const dms_st_tensor *find(const dms_safetensors *fx, const char *mode, const char *name) {
    char key[128];
    snprintf(key, sizeof key, "%s%s%s", mode ? mode : "", mode ? "." : "", name);
    const dms_st_tensor *t = dms_st_find(fx, key);
    CHECK_MSG(t != NULL, "fixture tensor '%s' missing", key);
    return t;
}

static const float *f32(const dms_safetensors *fx, const char *mode, const char *name) {
    const dms_st_tensor *t = find(fx, mode, name);
    return t ? (const float *)t->data : NULL;
}

typedef struct fixture {
    int window, eos, B, T;
    float scale, offset, tau;
    const int32_t *ids; /* [B, T] */
    int32_t *seg;       /* [T] zeros: reference packing has one segment per row */
    dms_row rows[8];
} fixture;

static double rel_diff(double got, double want) { return fabs(got - want) / fmax(fabs(want), 1e-30); }

/* A trainer for the fixture's settings and heads; alpha_per as `mode`. */
static dms_trainer *make_trainer(dms_model *m, const dms_safetensors *fx, const fixture *f, const char *mode) {
    dms_err err = {0};
    dms_train_config cfg;
    dms_train_config_defaults(&cfg);
    snprintf(cfg.model, sizeof cfg.model, "tests/fixtures/nvidia/adapter");
    snprintf(cfg.data, sizeof cfg.data, "-");
    cfg.packing = DMS_PACK_REFERENCE;
    cfg.max_len = f->T;
    cfg.kd_chunk = 7; /* row chunks of the KD, the last one partial (NVIDIA chunks the vocabulary) */
    cfg.variant = DMS_VARIANT_ADAPTER;
    cfg.alpha_per = !strcmp(mode, "layer") ? DMS_ALPHA_PER_LAYER : DMS_ALPHA_PER_HEAD;
    cfg.window = f->window;
    cfg.alpha_scale = f->scale;
    cfg.alpha_offset = f->offset;
    cfg.tau = f->tau;
    cfg.tau_start = 0;
    cfg.sinks = 0;
    cfg.compression_weight = 1.0f;
    cfg.compression_per = DMS_COMP_PER_ROW;
    cfg.cr_schedule = DMS_CR_LINEAR;
    cfg.steps_per_cr = 1; /* CR reaches cr_final at step cr_final - 1 */
    const float *cr = f32(fx, mode, "target_cr");
    cfg.cr_final = cr ? cr[0] : 2.0f;
    dms_trainer *tr = dms_trainer_create(m, &cfg, &err);
    CHECK_MSG(tr != NULL, "%s", err.msg);
    if (!tr) return NULL;
    const int L = m->cfg.n_layers, KV = m->cfg.n_kv_heads, d = m->cfg.hidden;
    const float *wa = f32(fx, NULL, "adapter.W_a"), *nw = f32(fx, NULL, "adapter.norm_w");
    for (int l = 0; wa && nw && l < L; l++) {
        dms_param *pa = dms_trainer_param(tr, 2 * l), *pn = dms_trainer_param(tr, 2 * l + 1);
        CHECK(strstr(pa->name, "dms_proj_alpha.weight") && strstr(pn->name, "dms_proj_alpha_norm.weight"));
        memcpy(pa->p, wa + (size_t)l * KV * d, sizeof(float) * KV * d);
        memcpy(pn->p, nw + (size_t)l * d, sizeof(float) * d);
    }
    return tr;
}

static double kd_tokens(const dms_trainer *tr, const fixture *f) {
    double n = 0;
    for (int b = 0; b < f->B; b++) n += dms_trainer_row_kd_tokens(tr, &f->rows[b]);
    return n;
}

/* One batch step with NVIDIA's noise; the losses and every gradient. */
static void check_step(dms_model *m, const dms_safetensors *fx, const fixture *f, const char *mode) {
    dms_err err = {0};
    const int L = m->cfg.n_layers, KV = m->cfg.n_kv_heads, d = m->cfg.hidden;
    dms_trainer *tr = make_trainer(m, fx, f, mode);
    const float *noise = f32(fx, mode, "noise");
    if (!tr || !noise) return;
    const dms_st_tensor *nt = find(fx, mode, "noise");
    CHECK(nt->n_dims == 4 && nt->shape[0] == (int64_t)f->B && nt->shape[1] == (int64_t)L &&
          nt->shape[2] == (int64_t)f->T && nt->shape[3] == (int64_t)KV);
    dms_trainer_test_fix_noise_rows(tr, noise, f->B);
    dms_step_stats st;
    const double ntok = kd_tokens(tr, f);
    CHECK_MSG(ntok < f->B * f->T, "no EOS inside the rows: the KD mask is not tested");
    int rc = dms_trainer_grads(tr, f->rows, f->B, 1000, ntok, f->B, &st, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) {
        dms_trainer_free(tr);
        return;
    }
    const double kd = f32(fx, mode, "loss_kd")[0], comp = f32(fx, mode, "loss_comp")[0];
    const double loss = f32(fx, mode, "loss")[0], target = f32(fx, mode, "target")[0];
    const float *frac_row = f32(fx, mode, "frac_row");
    double frac = 0;
    for (int b = 0; b < f->B; b++) frac += frac_row[b] / f->B;
    printf("alpha_per %s: kd %.9f (NVIDIA %.9f, rel %.2g)  comp %.9f (NVIDIA %.9f, abs %.2g)  loss rel %.2g  "
           "frac %.6f (NVIDIA %.6f)  target %.7f (NVIDIA %.7f)\n",
           mode, st.kd, kd, rel_diff(st.kd, kd), st.comp, comp, fabs(st.comp - comp), rel_diff(st.loss, loss),
           st.frac, frac, st.target, target);
    CHECK_MSG(rel_diff(st.target, target) < 1e-6, "target %.9f vs NVIDIA %.9f", st.target, target);
    CHECK_MSG(fabs(st.frac - frac) < 1e-6, "mean decision %.9f vs NVIDIA %.9f", st.frac, frac);
    CHECK_MSG(rel_diff(st.kd, kd) < TOL, "KD %.9g vs NVIDIA %.9g", st.kd, kd);
    CHECK_MSG(rel_diff(st.comp, comp) < TOL, "compression loss %.9g vs NVIDIA %.9g", st.comp, comp);
    CHECK_MSG(rel_diff(st.loss, loss) < TOL, "loss %.9g vs NVIDIA %.9g", st.loss, loss);
    /* one row is above the target and one below: clamping the batch mean,
     * max(0, target - mean), would give another loss (and would pass
     * gradient to both rows' decisions) */
    const double batch_clamp = fmax(0.0, target - frac);
    CHECK_MSG(rel_diff(batch_clamp, comp) > 100 * TOL, "fixture cannot tell per-row from batch clamping (%g vs %g)",
              comp, batch_clamp);

    const char *names[2] = {"grad.W_a", "grad.norm_w"};
    const size_t per_layer[2] = {(size_t)KV * d, (size_t)d};
    for (int k = 0; k < 2; k++) {
        const float *want = f32(fx, mode, names[k]);
        for (int l = 0; want && l < L; l++) {
            const dms_param *p = dms_trainer_param(tr, 2 * l + k);
            const float *w = want + per_layer[k] * l;
            double mx = 0;
            for (size_t i = 0; i < per_layer[k]; i++) mx = fmax(mx, fabs((double)p->g[i] - w[i]));
            const double e = dms_rel_err(p->g, w, per_layer[k]);
            printf("  %s.%s layer %d: max abs diff %.3g, rel %.3g\n", mode, names[k], l, mx, e);
            CHECK_MSG(e < TOL, "%s.%s layer %d: rel err %.3g", mode, names[k], l, e);
            if (!strcmp(mode, "layer") && k == 0) { /* only KV head 0's row decides */
                double rest = 0;
                for (size_t i = (size_t)d; i < per_layer[k]; i++) rest += fabs(w[i]) + fabs(p->g[i]);
                CHECK_MSG(rest == 0, "alpha_per layer: W_a rows of heads > 0 have gradient %g", rest);
            }
        }
    }
    dms_trainer_free(tr);
}

/* Each row alone with its own noise: the student logits. */
static void check_logits(dms_model *m, const dms_safetensors *fx, const fixture *f, const char *mode) {
    dms_err err = {0};
    const int L = m->cfg.n_layers, KV = m->cfg.n_kv_heads, V = m->cfg.vocab, T = f->T;
    dms_trainer *tr = make_trainer(m, fx, f, mode);
    const float *noise = f32(fx, mode, "noise"), *want = f32(fx, mode, "logits");
    float *got = malloc(sizeof(float) * (size_t)T * V);
    CHECK(got != NULL);
    for (int b = 0; tr && noise && want && got && b < f->B; b++) {
        dms_trainer_test_fix_noise(tr, noise + (size_t)b * L * T * KV);
        dms_step_stats st;
        const double ntok = dms_trainer_row_kd_tokens(tr, &f->rows[b]);
        CHECK(dms_trainer_grads(tr, &f->rows[b], 1, 1000, ntok, 1, &st, &err) == 0);
        dms_trainer_test_student_logits(tr, got);
        const float *w = want + (size_t)b * T * V;
        double mx = 0;
        for (size_t i = 0; i < (size_t)T * V; i++) mx = fmax(mx, fabs((double)got[i] - w[i]));
        const double e = dms_rel_err(got, w, (size_t)T * V);
        printf("  %s.logits row %d: max abs diff %.3g, rel %.3g\n", mode, b, mx, e);
        CHECK_MSG(e < TOL, "%s: student logits of row %d: rel err %.3g", mode, b, e);
    }
    free(got);
    dms_trainer_free(tr);
}

/* Counting the EOS inputs in the KD (as a trainer without NVIDIA's EOS
 * mask would) misses NVIDIA's KD by far more than the tolerance. */
static void eos_mask_matters(dms_model *m, const dms_safetensors *fx, fixture *f) {
    dms_err err = {0};
    const int32_t eos = m->cfg.eos_id;
    m->cfg.eos_id = -1;
    dms_trainer *tr = make_trainer(m, fx, f, "head");
    if (tr) {
        dms_trainer_test_fix_noise_rows(tr, f32(fx, "head", "noise"), f->B);
        dms_step_stats st;
        CHECK(dms_trainer_grads(tr, f->rows, f->B, 1000, kd_tokens(tr, f), f->B, &st, &err) == 0);
        const double e = rel_diff(st.kd, f32(fx, "head", "loss_kd")[0]);
        printf("KD with EOS inputs counted: rel diff %.3g\n", e);
        CHECK_MSG(e > 100 * TOL, "counting EOS changes the KD by only %.3g: the test cannot tell", e);
    }
    dms_trainer_free(tr);
    m->cfg.eos_id = eos;
}

int main(void) {
    dms_err err = {0};
    dms_model m;
    int rc = dms_model_load(&m, "tests/fixtures/nvidia/adapter", &dms_cpu_ops, DMS_LOAD_WEIGHTS, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) return dms_check_finish();
    dms_safetensors fx;
    rc = dms_st_open_file(&fx, "tests/fixtures/nvidia/train_adapter.safetensors", &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) {
        dms_model_free(&m);
        return dms_check_finish();
    }
    const float *c = f32(&fx, NULL, "config"); /* window, scale, offset, tau, eos, vocab chunk, B, T */
    const dms_st_tensor *ids = find(&fx, NULL, "input_ids");
    fixture f = {0};
    if (c && ids) {
        f.window = (int)c[0];
        f.scale = c[1];
        f.offset = c[2];
        f.tau = c[3];
        f.eos = (int)c[4];
        f.B = (int)c[6];
        f.T = (int)c[7];
        CHECK(ids->n_dims == 2 && ids->shape[0] == (int64_t)f.B && ids->shape[1] == (int64_t)f.T);
        CHECK(f.B > 1 && f.B <= 8);
    }
    if (c && ids && f.B > 1 && f.B <= 8) {
        f.ids = (const int32_t *)ids->data;
        f.seg = calloc((size_t)f.T, sizeof(int32_t));
        for (int b = 0; b < f.B; b++) f.rows[b] = (dms_row){f.ids + (size_t)b * f.T, f.seg, NULL, 0, 0};
        /* NVIDIA's trainer takes EOS from the tokenizer; the fixture model's
         * config (saved by NVIDIA's code) names none */
        m.cfg.eos_id = f.eos;
        for (int i = 0; i < 2; i++) {
            const char *mode = i ? "layer" : "head";
            check_step(&m, &fx, &f, mode);
            check_logits(&m, &fx, &f, mode);
        }
        eos_mask_matters(&m, &fx, &f);
        free(f.seg);
    }
    dms_st_close(&fx);
    dms_model_free(&m);
    return dms_check_finish();
}
