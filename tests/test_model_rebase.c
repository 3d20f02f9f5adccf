/* test_model_rebase.c - dms_model_take_base (model/model_rebase.c), which
 * `dms generate --base` and `dms bench decode` use to run a DMS export on
 * its base's stored weights: on the tiny Qwen3 fixture (stored in F16),
 * a DMS model of fp32 weights with random adapter heads takes the F16
 * weights kept as stored, and its logits under policy dms stay those of
 * the fp32 model (1e-4 relative: the F16 values widen exactly; only the
 * kernels' summation order differs), with the same evictions; refused: a
 * weight off by more than bf16 rounding, the neuron variant, another
 * model's shapes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"
#include "model/model.h"
#include "runtime/kv_paged.h"
#include "tests/check.h"

#define TINY "tests/fixtures/models/tiny_qwen3"

static uint64_t rng = 0x7265;
static float frand(float lo, float hi) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)((double)(rng >> 11) / 9007199254740992.0);
}

static int dms_model_of(dms_model *m, const dms_backend *be, int adapter, dms_err *err) {
    if (dms_model_load(m, TINY, be, DMS_LOAD_WEIGHTS, err) != 0) return -1;
    dms_dms_config d;
    dms_dms_config_defaults(&d);
    d.separate_alpha = adapter;
    d.window = 4;
    d.block_size = 3;
    if (dms_model_init_heads(m, &d, err) != 0) return -1;
    rng = 0x7265;
    for (int l = 0; adapter && l < m->cfg.n_layers; l++) {
        float *w = m->layers[l].heads.w_a.data;
        for (int i = 0; i < m->cfg.n_kv_heads * m->cfg.hidden; i++) w[i] = frand(-0.03f, 0.03f);
    }
    return 0;
}

/* logits of ids under policy dms, token by token; the live tokens held at the end */
static double run(const dms_model *m, const int32_t *ids, int T, float *logits, dms_err *err) {
    dms_kv_opts o;
    dms_kv_opts_default(&o);
    o.block_size = 3;
    dms_kv_paged *kv = dms_kv_create(m, &o, err);
    if (!kv) return -1;
    const int s = dms_kv_admit(kv, err);
    int rc = s < 0;
    for (int t = 0; !rc && t < T; t++) rc = dms_kv_prefill(kv, s, ids + t, 1, logits + (size_t)t * m->cfg.vocab, 1, err);
    dms_kv_stats st;
    if (!rc) dms_kv_seq_stats(kv, s, &st);
    dms_kv_free(kv);
    return rc ? -1 : st.held_mean;
}

int main(void) {
    dms_err err = {0};
    dms_backend be;
    CHECK_MSG(dms_backend_cpu_create(&be, &err) == 0, "%s", err.msg);
    dms_model dm, base;
    int rc = dms_model_of(&dm, &be, 1, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    rc |= dms_model_load(&base, TINY, &be, DMS_LOAD_WEIGHTS | DMS_LOAD_KEEP_DTYPE, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) return dms_check_finish();
    CHECK_MSG(base.layers[0].wq.dtype == DMS_F16, "fixture kept as %d", base.layers[0].wq.dtype);
    enum { T = 40 };
    const int V = dm.cfg.vocab;
    int32_t ids[T];
    for (int i = 0; i < T; i++) ids[i] = (int32_t)(frand(0, 1) * (V - 1));
    float *want = malloc(sizeof(float) * T * V), *got = malloc(sizeof(float) * T * V);
    const double held0 = run(&dm, ids, T, want, &err);
    CHECK_MSG(held0 > 0 && held0 < T - 4, "%s (held %.1f of %d: the heads should evict)", err.msg, held0, T);

    rc = dms_model_take_base(&dm, &base, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    CHECK(dm.layers[0].wq.dtype == DMS_F16 && dm.layers[1].w_down.dtype == DMS_F16 && base.layers[0].wq.dtype == DMS_F32);
    CHECK(dm.has_heads && dm.layers[0].heads.w_a.data != NULL);
    const double held1 = run(&dm, ids, T, got, &err);
    const double e = dms_rel_err(got, want, (size_t)T * V);
    printf("DMS model on the F16 base weights: logits rel err %.2e, held %.2f vs %.2f per lane\n", e, held1, held0);
    CHECK_MSG(e <= 1e-4, "logits rel err %.3g", e);
    CHECK_MSG(held1 == held0, "held %.2f vs %.2f", held1, held0);
    dms_model_free(&dm);
    dms_model_free(&base); /* now holding dm's fp32 weights: both free cleanly */

    /* refusals */
    const struct { int adapter, perturb; const char *base_path, *msg; } bad[] = {
        {1, 1, TINY, "was not trained on"},
        {0, 0, TINY, "not an adapter-variant"},
        {1, 0, "tests/fixtures/models/tiny_llama", "shapes differ"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        rc = dms_model_of(&dm, &be, bad[i].adapter, &err);
        rc |= dms_model_load(&base, bad[i].base_path, &be, DMS_LOAD_WEIGHTS | DMS_LOAD_KEEP_DTYPE, &err);
        CHECK_MSG(rc == 0, "%s", err.msg);
        if (rc) break;
        if (bad[i].perturb) ((float *)dm.layers[1].wk.data)[5] += 0.01f; /* far past bf16 rounding (2^-8 relative) */
        err.msg[0] = 0;
        CHECK_MSG(dms_model_take_base(&dm, &base, &err) != 0 && strstr(err.msg, bad[i].msg), "case %zu: '%s'", i,
                  err.msg);
        dms_model_free(&dm);
        dms_model_free(&base);
    }
    free(want);
    free(got);
    dms_backend_cpu_destroy(&be);
    return dms_check_finish();
}
