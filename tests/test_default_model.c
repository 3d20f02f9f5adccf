/* test_default_model.c - the embedded default model (SmolLM2-135M-Instruct,
 * Q4_1 GGUF) end to end against Hugging Face transformers run on the same
 * file (tests/reference/make_default_model_fixture.py): GGUF dequantisation,
 * the un-permutation of llama.cpp's q/k rows, and the forward pass. */
#include <stdlib.h>

#include "model/model.h"
#include "runtime/kv_dense.h"
#include "model/safetensors.h"
#include "runtime/generate.h"
#include "runtime/sampler.h"
#include "tests/check.h"

int main(void) {
    const char *path = getenv("DMS_DEFAULT_GGUF");
    if (!path || !*path) path = "models/default.gguf";
    dms_err err = {0};
    dms_model m;
    int rc = dms_model_load(&m, path, &dms_cpu_ops, DMS_LOAD_WEIGHTS, &err);
    CHECK_MSG(rc == 0, "%s (run scripts/install_deps.sh to install the embedded model)", err.msg);
    if (rc) return dms_check_finish();
    dms_safetensors ref;
    rc = dms_st_open_file(&ref, "tests/fixtures/default_model/reference.safetensors", &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) return dms_check_finish();
    const dms_st_tensor *ids_t = dms_st_find(&ref, "input_ids"), *last_t = dms_st_find(&ref, "last_logits"),
                        *am_t = dms_st_find(&ref, "argmax"), *gr_t = dms_st_find(&ref, "greedy_ids");
    CHECK(ids_t && last_t && am_t && gr_t);
    if (!ids_t || !last_t || !am_t || !gr_t) return dms_check_finish();
    const int T = (int)ids_t->shape[0], V = m.cfg.vocab;
    const int32_t *ids = (const int32_t *)ids_t->data;
    CHECK(last_t->shape[0] == V);

    float *logits = malloc(sizeof(float) * (size_t)T * V);
    dms_kv_dense cache;
    dms_forward_state st;
    CHECK(dms_kv_dense_init(&cache, &m, T, &err) == 0);
    CHECK(dms_forward_state_init(&st, &m, 16, &err) == 0); /* chunked prefill */
    rc = dms_model_forward(&m, &cache.base, &st, ids, T, logits, 0, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    const float *want = (const float *)last_t->data, *got = logits + (size_t)(T - 1) * V;
    double scale = 0, maxdiff = 0;
    for (int i = 0; i < V; i++) {
        scale = fmax(scale, fabs(want[i]));
        maxdiff = fmax(maxdiff, fabs((double)got[i] - want[i]));
    }
    printf("default model: last-position logits max abs diff %.2e (max |logit| %.1f)\n", maxdiff, scale);
    CHECK_MSG(maxdiff <= 1e-4 * scale, "last logits differ by %.3g (scale %.3g)", maxdiff, scale);
    int argmax_same = 0;
    for (int t = 0; t < T; t++) argmax_same += dms_argmax(logits + (size_t)t * V, V) == ((const int32_t *)am_t->data)[t];
    CHECK_MSG(argmax_same == T, "argmax equal at %d of %d positions", argmax_same, T);
    dms_forward_state_free(&st);
    dms_kv_dense_free(&cache);

    dms_gen_params gp;
    dms_gen_params_default(&gp);
    gp.max_new_tokens = (int)gr_t->shape[0];
    gp.stop_at_eos = 0;
    int32_t *out = NULL;
    dms_gen_stats gs;
    rc = dms_generate(&m, ids, T, &gp, NULL, NULL, &out, &gs, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    int same = 0;
    for (int i = 0; out && i < gp.max_new_tokens; i++) same += out[i] == ((const int32_t *)gr_t->data)[i];
    CHECK_MSG(same == gp.max_new_tokens, "greedy ids equal at %d of %d", same, gp.max_new_tokens);
    free(out);
    free(logits);
    dms_st_close(&ref);
    dms_model_free(&m);
    return dms_check_finish();
}
