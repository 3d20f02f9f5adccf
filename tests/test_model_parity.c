/* test_model_parity.c - the C forward pass against Hugging Face: for each
 * tiny random model of tests/fixtures/models (made by
 * tests/reference/make_model_fixtures.py with transformers), the logits of a
 * fixed input match to 1e-4 relative, chunked prefill and token-by-token
 * decoding through the KV cache agree with the one-shot pass, and greedy
 * decoding reproduces transformers' generate(). */
#include <stdlib.h>

#include "model/model.h"
#include "runtime/kv_dense.h"
#include "model/safetensors.h"
#include "runtime/generate.h"
#include "tests/check.h"

static void check_model(const char *name) {
    char dir[256], ref_path[300];
    snprintf(dir, sizeof dir, "tests/fixtures/models/%s", name);
    snprintf(ref_path, sizeof ref_path, "%s/reference.safetensors", dir);
    dms_err err = {0};
    dms_model m;
    int rc = dms_model_load(&m, dir, &dms_cpu_ops, DMS_LOAD_WEIGHTS, &err);
    CHECK_MSG(rc == 0, "%s: %s", name, err.msg);
    if (rc) return;
    dms_safetensors ref;
    rc = dms_st_open_file(&ref, ref_path, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) {
        dms_model_free(&m);
        return;
    }
    const dms_st_tensor *ids_t = dms_st_find(&ref, "input_ids"), *lg_t = dms_st_find(&ref, "logits");
    const dms_st_tensor *gr_t = dms_st_find(&ref, "greedy_ids");
    CHECK(ids_t && lg_t && gr_t && ids_t->dtype == DMS_ST_I32);
    if (!ids_t || !lg_t || !gr_t) goto out;
    const int T = (int)ids_t->shape[1], V = m.cfg.vocab;
    const int32_t *ids = (const int32_t *)ids_t->data;
    float *want = malloc(sizeof(float) * (size_t)T * V), *got = malloc(sizeof(float) * (size_t)T * V);
    dms_st_to_f32(&ref, lg_t, want, &err);

    /* 1. one shot */
    dms_kv_dense cache;
    dms_forward_state st;
    CHECK(dms_kv_dense_init(&cache, &m, T, &err) == 0);
    CHECK(dms_forward_state_init(&st, &m, T, &err) == 0);
    rc = dms_model_forward(&m, &cache.base, &st, ids, T, got, 0, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    double e1 = dms_rel_err(got, want, (size_t)T * V);
    CHECK_MSG(e1 < 1e-4, "%s: one-shot logits rel err %.3g", name, e1);
    printf("%s: logits max rel err %.2e\n", name, e1);
    dms_forward_state_free(&st);
    dms_kv_dense_free(&cache);

    /* 2. chunked prefill (chunks of 5) and 3. one token at a time */
    for (int chunk = 5; chunk >= 1; chunk -= 4) {
        CHECK(dms_kv_dense_init(&cache, &m, T, &err) == 0);
        CHECK(dms_forward_state_init(&st, &m, chunk, &err) == 0);
        for (int t = 0; t < T; t += chunk) {
            int n = T - t < chunk ? T - t : chunk;
            dms_model_forward(&m, &cache.base, &st, ids + t, n, got + (size_t)t * V, 0, &err);
        }
        double e = dms_rel_err(got, want, (size_t)T * V);
        CHECK_MSG(e < 1e-4, "%s: chunk %d logits rel err %.3g", name, chunk, e);
        dms_forward_state_free(&st);
        dms_kv_dense_free(&cache);
    }

    /* 4. greedy continuation of the first 6 ids */
    dms_gen_params gp;
    dms_gen_params_default(&gp);
    const int n_new = (int)gr_t->shape[gr_t->n_dims - 1];
    gp.max_new_tokens = n_new;
    gp.stop_at_eos = 0;
    int32_t *out = NULL;
    dms_gen_stats gs;
    rc = dms_generate(&m, ids, 6, &gp, NULL, NULL, &out, &gs, &err);
    CHECK_MSG(rc == 0 && gs.new_tokens == n_new, "%s: generate: %s", name, err.msg);
    const int32_t *want_ids = (const int32_t *)gr_t->data;
    int same = 1;
    for (int i = 0; out && i < n_new; i++) same &= out[i] == want_ids[i];
    CHECK_MSG(same, "%s: greedy ids differ from transformers' generate()", name);
    free(out);
    free(want);
    free(got);
out:
    dms_st_close(&ref);
    dms_model_free(&m);
}

int main(void) {
    check_model("tiny_llama");
    check_model("tiny_qwen2");
    check_model("tiny_qwen3");
    return dms_check_finish();
}
