/* test_nvidia_runtime.c - our loader and paged runtime against NVIDIA
 * Model-Optimizer's own DMS inference code: tiny Qwen3 checkpoints in
 * NVIDIA's layout (adapter and neuron variants, made and run by
 * tests/reference/nvidia/make_nvidia_fixtures.py, NVIDIA's code never
 * committed) load with their dms_* fields, and our runtime reproduces
 * NVIDIA's logits token by token, in one prefill, in chunks of 7, in a
 * prefill followed by decoding, and with eviction off, to 1e-4, with the
 * same number of cached tokens per (layer, KV head) after every token. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/safetensors.h"
#include "runtime/kv_paged.h"
#include "tests/check.h"

static const void *tensor(const dms_safetensors *st, const char *name) {
    const dms_st_tensor *t = dms_st_find(st, name);
    CHECK_MSG(t != NULL, "fixture tensor '%s' missing", name);
    return t ? t->data : NULL;
}

static dms_kv_paged *open_rt(const dms_model *m, dms_policy pol, int chunk, int *seq) {
    dms_kv_opts o;
    dms_kv_opts_default(&o);
    o.policy = pol;
    o.max_chunk = chunk;
    dms_err err = {0};
    dms_kv_paged *kv = dms_kv_create(m, &o, &err);
    CHECK_MSG(kv != NULL, "%s", err.msg);
    *seq = kv ? dms_kv_admit(kv, &err) : -1;
    return kv;
}

static void check_variant(const char *variant) {
    char dir[256], path[300];
    snprintf(dir, sizeof dir, "tests/fixtures/nvidia/%s", variant);
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    dms_err err = {0};
    dms_model m;
    if (dms_model_load(&m, dir, &dms_cpu_ops, DMS_LOAD_WEIGHTS, &err) != 0) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    const int adapter = !strcmp(variant, "adapter");
    CHECK(m.has_heads && m.cfg.dms.present && m.cfg.dms.separate_alpha == adapter && m.cfg.dms.window == 8 &&
          m.cfg.dms.block_size == 4);
    dms_safetensors fx;
    if (dms_st_open_file(&fx, path, &err) != 0) {
        CHECK_MSG(0, "%s", err.msg);
        dms_model_free(&m);
        return;
    }
    const dms_st_tensor *ids_t = dms_st_find(&fx, "input_ids");
    const int T = (int)ids_t->shape[0], V = m.cfg.vocab, L = m.cfg.n_layers, KV = m.cfg.n_kv_heads;
    const int32_t *ids = (const int32_t *)ids_t->data;
    const int32_t *cache_len = tensor(&fx, "cache_len");
    float *got = malloc(sizeof(float) * (size_t)T * V);
    int seq;

    /* token by token, with NVIDIA's cache occupancy after every token */
    dms_kv_paged *kv = open_rt(&m, DMS_POLICY_DMS, 16, &seq);
    int len_ok = 1;
    for (int t = 0; kv && t < T; t++) {
        CHECK(dms_kv_prefill(kv, seq, ids + t, 1, got + (size_t)t * V, 0, &err) == 0);
        for (int l = 0; l < L; l++)
            for (int h = 0; h < KV; h++)
                if (dms_kv_lane_len(kv, seq, l, h) != cache_len[((size_t)t * L + l) * KV + h]) {
                    if (len_ok)
                        printf("%s: after token %d layer %d head %d we hold %d, NVIDIA %d\n", variant, t, l, h,
                               dms_kv_lane_len(kv, seq, l, h), cache_len[((size_t)t * L + l) * KV + h]);
                    len_ok = 0;
                }
    }
    double e = dms_rel_err(got, tensor(&fx, "logits_decode"), (size_t)T * V);
    printf("%s: token by token vs NVIDIA: rel err %.3g\n", variant, e);
    CHECK_MSG(e < 1e-4, "%s: decode logits differ from NVIDIA's by %.3g", variant, e);
    CHECK_MSG(len_ok, "%s: cache occupancy differs from NVIDIA's", variant);
    dms_kv_free(kv);

    /* one prefill; chunks of 7; 19 tokens then decoding */
    const struct {
        const char *key;
        int chunk, split;
    } paths[] = {{"logits_prefill", 64, T}, {"logits_chunked", 7, T}, {"logits_mixed", 64, 19}};
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        kv = open_rt(&m, DMS_POLICY_DMS, paths[p].chunk, &seq);
        if (!kv) continue;
        CHECK(dms_kv_prefill(kv, seq, ids, paths[p].split, got, 1, &err) == 0);
        for (int t = paths[p].split; t < T; t++)
            CHECK(dms_kv_decode(kv, &seq, ids + t, 1, got + (size_t)t * V, &err) == 0);
        e = dms_rel_err(got, tensor(&fx, paths[p].key), (size_t)T * V);
        printf("%s: %s vs NVIDIA: rel err %.3g\n", variant, paths[p].key, e);
        CHECK_MSG(e < 1e-4, "%s: %s differs from NVIDIA's by %.3g", variant, paths[p].key, e);
        const int32_t *final_len = paths[p].split == T ? cache_len + (size_t)(T - 1) * L * KV : NULL;
        for (int i = 0; final_len && i < L * KV; i++)
            CHECK_MSG(dms_kv_lane_len(kv, seq, i / KV, i % KV) == final_len[i], "%s: %s cache length", variant,
                      paths[p].key);
        dms_kv_free(kv);
    }

    /* eviction off: the same model (neuron: its channel still zeroed) */
    kv = open_rt(&m, DMS_POLICY_FULL, 64, &seq);
    if (kv) {
        CHECK(dms_kv_prefill(kv, seq, ids, 1, got, 1, &err) == 0);
        for (int t = 1; t < T; t++) CHECK(dms_kv_decode(kv, &seq, ids + t, 1, got + (size_t)t * V, &err) == 0);
        e = dms_rel_err(got, tensor(&fx, "vanilla_logits"), (size_t)T * V);
        printf("%s: eviction off vs NVIDIA: rel err %.3g\n", variant, e);
        CHECK_MSG(e < 1e-4, "%s: logits without eviction differ from NVIDIA's by %.3g", variant, e);
        dms_kv_free(kv);
    }
    free(got);
    dms_st_close(&fx);
    dms_model_free(&m);
}

int main(void) {
    check_variant("adapter");
    check_variant("neuron");
    return dms_check_finish();
}
