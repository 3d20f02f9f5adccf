/* model_config.c (fuzz target) - a Hugging Face config.json
 * (dms_config_from_hf, model/config.c): architecture names, sizes, rope
 * scaling in both layouts, and the dms_* fields of a DMS checkpoint under
 * NVIDIA's names (types, ranges, window vs block size). An accepted config
 * must describe a model the loader can size without overflow, and its
 * dms_* fields must survive dms_dms_config_to_json and back unchanged (what
 * `dms export` writes). */
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_common.h"
#include "model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[PATH_MAX];
    fuzz_write_file("config.json", data, size, path, sizeof path);
    dms_config c;
    char *raw = NULL;
    dms_err err = {{0}};
    int rc = dms_config_from_hf(&c, path, &raw, &err);
    fuzz_check_err(rc, &err, path, "dms_config_from_hf");
    if (rc) return 0;
    fuzz_require(raw != NULL, "the raw text is kept");
    fuzz_require(c.n_layers > 0 && c.hidden > 0 && c.n_heads > 0 && c.n_kv_heads > 0 && c.head_dim > 0 &&
                     c.vocab > 0 && c.intermediate > 0,
                 "accepted sizes are positive");
    /* what the loader computes from them must not overflow an int */
    fuzz_require((long long)c.n_heads * c.head_dim <= INT_MAX && (long long)c.n_kv_heads * c.head_dim <= INT_MAX,
                 "q/kv widths fit an int");
    float *inv = malloc(sizeof(float) * (size_t)(c.head_dim / 2));
    if (!inv) abort();
    dms_config_rope_inv_freq(&c, inv);
    free(inv);

    /* dms_* fields: to JSON and back */
    cJSON *o = cJSON_CreateObject();
    if (!o || dms_dms_config_to_json(&c.dms, o) != 0) abort();
    dms_dms_config d2;
    dms_err e2 = {{0}};
    rc = dms_dms_config_from_json(&d2, o, "round trip", &e2);
    fuzz_check_err(rc, &e2, NULL, "dms_dms_config_from_json (round trip)");
    fuzz_require(rc == 0 || !c.dms.present, "written dms_* fields read back");
    if (rc == 0 && c.dms.present)
        fuzz_require(d2.alpha_scale == c.dms.alpha_scale && d2.alpha_offset == c.dms.alpha_offset &&
                         d2.window == c.dms.window && d2.separate_alpha == c.dms.separate_alpha &&
                         d2.alpha_per_layer == c.dms.alpha_per_layer && d2.tau == c.dms.tau &&
                         d2.cr == c.dms.cr && d2.disable_eviction == c.dms.disable_eviction &&
                         d2.block_size == c.dms.block_size && d2.sink_tokens == c.dms.sink_tokens,
                     "dms_* fields round-trip unchanged");
    cJSON_Delete(o);
    free(raw);
    return 0;
}
