/* test_dms_config.c - DMS as part of the model: the dms_* fields of
 * config.json (NVIDIA's names and defaults, type errors naming the field,
 * a round trip through JSON), the raw source config kept for export, the
 * heads a DMS checkpoint brings (neuron rows from q_proj; an adapter
 * checkpoint without its tensors is refused), and the frozen base weights
 * left bit-identical by training steps of both variants with LoRA. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/mapped_file.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "runtime/kv_dense.h"
#include "tests/check.h"
#include "train/trainer.h"

#define TINY "tests/fixtures/models/tiny_qwen3"

static char tmpdir[64];

/* A copy of the tiny Qwen3 folder whose config.json gets `extra` (JSON
 * members, may be "") merged in; returns the folder. */
static const char *variant_folder(const char *name, const char *extra) {
    static char dir[256];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
    char path[512], target[512];
    dms_err err;
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    char *cwd = getcwd(NULL, 0);
    snprintf(target, sizeof target, "%s/" TINY "/model.safetensors", cwd ? cwd : ".");
    free(cwd);
    unlink(path);
    CHECK(symlink(target, path) == 0);
    char *text = dms_read_text_file(TINY "/config.json", NULL, &err);
    CHECK(text != NULL);
    if (!text) return dir;
    char *close = strrchr(text, '}');
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fprintf(f, "%.*s%s%s}\n", (int)(close - text), text, *extra ? ", " : "", extra);
        fclose(f);
    }
    free(text);
    return dir;
}

static void defaults_and_source(void) {
    dms_err err = {0};
    dms_model m;
    CHECK_MSG(dms_model_load(&m, TINY, &dms_cpu_ops, 0, &err) == 0, "%s", err.msg);
    const dms_dms_config *d = &m.cfg.dms;
    CHECK(d->present == 0 && m.has_heads == 0);
    /* Model-Optimizer's Qwen3ConfigDMS defaults */
    CHECK(d->alpha_scale == 100.0f && d->alpha_offset == 5.0f && d->window == 512 && d->separate_alpha == 0 &&
          d->alpha_per_layer == 0 && d->tau == 0.1f && d->cr == 8.0f && d->disable_eviction == 0 &&
          d->block_size == 256);
    char *text = dms_read_text_file(TINY "/config.json", NULL, &err);
    CHECK_MSG(m.source_config && text && !strcmp(m.source_config, text), "source config.json not kept verbatim");
    free(text);
    dms_model_free(&m);
}

static void round_trip(void) {
    dms_dms_config a, b;
    dms_dms_config_defaults(&a);
    a.alpha_scale = 50;
    a.alpha_offset = -2.5f;
    a.window = 16;
    a.separate_alpha = 1;
    a.alpha_per_layer = 1;
    a.tau = 0.25f;
    a.cr = 4;
    a.disable_eviction = 1;
    a.block_size = 8;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "dms_window_size", 999); /* replaced, not duplicated */
    CHECK(dms_dms_config_to_json(&a, o) == 0);
    char *s = cJSON_PrintUnformatted(o);
    CHECK(strstr(s, "\"dms_alpha_per\":\"layer\"") && strstr(s, "\"dms_separate_alpha\":true") &&
          strstr(s, "\"dms_paged_attention_block_size\":8") && !strstr(s, "999"));
    dms_err err = {0};
    CHECK_MSG(dms_dms_config_from_json(&b, o, "x", &err) == 0, "%s", err.msg);
    a.present = 1;
    CHECK_MSG(!memcmp(&a, &b, sizeof a), "round trip changed the dms fields: %s", s);
    free(s);
    cJSON_Delete(o);
}

static void bad_fields(void) {
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"\"dms_window_size\": \"big\"", "'dms_window_size' must be a number"},
        {"\"dms_window_size\": 16.5", "'dms_window_size' must be an integer"},
        {"\"dms_window_size\": -3", "'dms_window_size' must be greater than 0"},
        {"\"dms_separate_alpha\": 1", "'dms_separate_alpha' must be true or false"},
        {"\"dms_alpha_per\": \"token\"", "'dms_alpha_per' must be \"head\" or \"layer\""},
        {"\"dms_tau\": 0", "'dms_tau' must be greater than 0"},
        {"\"dms_alpha_scale\": [1]", "'dms_alpha_scale' must be a number"},
        /* the value is kept as a float32: one that becomes 0 or inf there is refused */
        {"\"dms_tau\": 1e-50", "'dms_tau' is out of range for a float32"},
        {"\"dms_alpha_scale\": 1e39", "'dms_alpha_scale' is out of range for a float32"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu", i);
        const char *dir = variant_folder(name, cases[i].json);
        dms_err err = {0};
        dms_model m;
        CHECK_MSG(dms_model_load(&m, dir, &dms_cpu_ops, 0, &err) != 0, "accepted %s", cases[i].json);
        CHECK_MSG(strstr(err.msg, cases[i].want) && strstr(err.msg, "config.json"), "%s -> '%s'", cases[i].json,
                  err.msg);
    }
}

/* Sizes beyond DMS_CONFIG_MAX_DIM / _VOCAB are refused (the int sizes the
 * loader derives from them would overflow); optional integers far out of
 * range are clamped, never converted with undefined behaviour
 * (docs/fuzzing.md, "Limits"). */
static void size_limits(void) {
    static const struct {
        const char *sizes, *want; /* want NULL: loads */
    } cases[] = {
        {"\"num_hidden_layers\": 2, \"hidden_size\": 64, \"num_attention_heads\": 4, \"vocab_size\": 512", NULL},
        {"\"num_hidden_layers\": 1048577, \"hidden_size\": 64, \"num_attention_heads\": 4, \"vocab_size\": 512",
         "beyond the limits (layers 1048577"},
        {"\"num_hidden_layers\": 2, \"hidden_size\": 64, \"num_attention_heads\": 4096, \"head_dim\": 512, "
         "\"vocab_size\": 512", "heads 4096 x head_dim 512"},
        {"\"num_hidden_layers\": 2, \"hidden_size\": 64, \"num_attention_heads\": 4, \"vocab_size\": 16777217",
         "vocab 16777217"},
        {"\"num_hidden_layers\": 2, \"hidden_size\": 64, \"num_attention_heads\": 4, \"vocab_size\": 512, "
         "\"max_position_embeddings\": 1e300, \"bos_token_id\": -1e300", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[256], path[300];
        snprintf(dir, sizeof dir, "%s/limits%zu", tmpdir, i);
        mkdir(dir, 0755);
        snprintf(path, sizeof path, "%s/config.json", dir);
        FILE *f = fopen(path, "w");
        CHECK(f != NULL);
        if (!f) continue;
        fprintf(f, "{\"model_type\": \"llama\", \"intermediate_size\": 128, %s}\n", cases[i].sizes);
        fclose(f);
        dms_err err = {0};
        dms_model m;
        const int rc = dms_model_load(&m, dir, &dms_cpu_ops, 0, &err);
        if (!cases[i].want) {
            CHECK_MSG(rc == 0, "%s: %s", cases[i].sizes, err.msg);
            if (rc == 0) {
                if (strstr(cases[i].sizes, "1e300")) CHECK(m.cfg.max_pos == 2147483647 && m.cfg.bos_id < 0);
                dms_model_free(&m);
            }
        } else {
            CHECK_MSG(rc != 0 && strstr(err.msg, cases[i].want) && strstr(err.msg, path), "%s -> '%s'", cases[i].sizes,
                      err.msg);
        }
    }
    /* token ids must fit the model: a tokenizer with more tokens (602) than
     * the config's vocabulary (512) is refused at load */
    char dir[256], cmd[800];
    snprintf(dir, sizeof dir, "%s/bigtok", tmpdir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp tests/fixtures/models/tiny_qwen2/config.json "
             "tests/fixtures/tokenizer/tiny_qwen2/tokenizer.json tests/fixtures/tokenizer/tiny_qwen2/tokenizer_config.json "
             "'%s'/", dir, dir);
    CHECK(system(cmd) == 0);
    dms_err err = {0};
    dms_model m;
    const int rc = dms_model_load(&m, dir, &dms_cpu_ops, DMS_LOAD_TOKENIZER, &err);
    CHECK_MSG(rc != 0 && strstr(err.msg, dir) && strstr(err.msg, "tokenizer has 602 tokens but the model's vocabulary is 512"),
              "tokenizer larger than the vocabulary: %s", err.msg);
    if (rc == 0) dms_model_free(&m);
}

/* A DMS checkpoint without dms_separate_alpha is a neuron model: its heads
 * are the decision rows of q_proj. */
static void neuron_checkpoint(void) {
    const char *dir = variant_folder("neuron", "\"dms_window_size\": 64, \"dms_paged_attention_block_size\": 16, \"dms_cr\": 8");
    dms_err err = {0};
    dms_model m;
    CHECK_MSG(dms_model_load(&m, dir, &dms_cpu_ops, DMS_LOAD_WEIGHTS, &err) == 0, "%s", err.msg);
    if (err.msg[0]) return;
    CHECK(m.cfg.dms.present && !m.cfg.dms.separate_alpha && m.cfg.dms.window == 64 && m.has_heads);
    const int d = m.cfg.hidden;
    for (int l = 0; l < m.cfg.n_layers; l++)
        for (int h = 0; h < m.cfg.n_kv_heads; h++) {
            const float *row = (const float *)m.layers[l].wq.data + (size_t)dms_neuron_row(&m.cfg, h) * d;
            const float *mine = (const float *)m.layers[l].heads.q_rows.data + (size_t)h * d;
            CHECK_MSG(!memcmp(row, mine, sizeof(float) * d), "layer %d head %d: decision row differs from q_proj", l,
                      h);
        }
    dms_model_free(&m);
}

static void adapter_checkpoint_needs_tensors(void) {
    const char *dir = variant_folder("adapter", "\"dms_separate_alpha\": true, \"dms_window_size\": 64, \"dms_paged_attention_block_size\": 16");
    dms_err err = {0};
    dms_model m;
    CHECK(dms_model_load(&m, dir, &dms_cpu_ops, DMS_LOAD_WEIGHTS, &err) != 0);
    CHECK_MSG(strstr(err.msg, "missing tensor 'model.layers.0.self_attn.dms_proj_alpha.weight'"), "%s", err.msg);
}

/* Every frozen tensor of the model, concatenated (CPU backend: host memory). */
static size_t snapshot(const dms_model *m, char **out) {
    size_t n = 0;
    char *buf = NULL;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const dms_layer *L = &m->layers[l];
        const dms_mat *mats[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) {
            const size_t b = dms_dtype_bytes(mats[i]->dtype, (size_t)mats[i]->rows * mats[i]->cols);
            buf = realloc(buf, n + b);
            memcpy(buf + n, mats[i]->data, b);
            n += b;
        }
    }
    *out = buf;
    return n;
}

static void base_weights_frozen(void) {
    dms_err err = {0};
    dms_safetensors fx;
    CHECK_MSG(dms_st_open_file(&fx, "tests/fixtures/dms/tiny_qwen3_dms.safetensors", &err) == 0, "%s", err.msg);
    const dms_st_tensor *ids_t = dms_st_find(&fx, "input_ids"), *seg_t = dms_st_find(&fx, "segment_ids");
    const int T = (int)ids_t->shape[0];
    for (int variant = 0; variant < 2; variant++) {
        dms_model m;
        CHECK_MSG(dms_model_load(&m, TINY, &dms_cpu_ops, DMS_LOAD_WEIGHTS, &err) == 0, "%s", err.msg);
        char *before = NULL, *after = NULL;
        const size_t n = snapshot(&m, &before);
        dms_train_config cfg;
        dms_train_config_defaults(&cfg);
        cfg.max_len = T;
        cfg.window = 4;
        cfg.lr = 1e-2f;
        cfg.lora_rank = 2;
        cfg.variant = variant ? DMS_VARIANT_NEURON : DMS_VARIANT_ADAPTER;
        dms_trainer *tr = dms_trainer_create(&m, &cfg, &err);
        CHECK_MSG(tr != NULL, "%s", err.msg);
        const dms_row row = {(const int32_t *)ids_t->data, (const int32_t *)seg_t->data, NULL, 0, 0};
        for (int step = 0; tr && step < 3; step++) {
            dms_step_stats st;
            CHECK_MSG(dms_trainer_grads(tr, &row, 1, step, T, 1, &st, &err) == 0, "%s", err.msg);
            dms_trainer_apply(tr, step, &st);
        }
        CHECK(m.has_heads && m.cfg.dms.present && m.cfg.dms.separate_alpha == !variant && m.cfg.dms.window == 4);
        CHECK(snapshot(&m, &after) == n);
        CHECK_MSG(!memcmp(before, after, n), "%s training wrote to the frozen base weights",
                  variant ? "neuron" : "adapter");
        free(before);
        free(after);
        dms_trainer_free(tr);
        dms_model_free(&m);
    }
    dms_st_close(&fx);
}

/* Logits of `ids` through the plain cache. */
static int logits_of(const dms_model *m, const int32_t *ids, int n, float *out) {
    dms_err err = {0};
    dms_kv_dense c;
    dms_forward_state st;
    int rc = dms_kv_dense_init(&c, m, n, &err);
    if (rc == 0) rc = dms_forward_state_init(&st, m, n, &err);
    if (rc == 0) rc = dms_model_forward(m, &c.base, &st, ids, n, out, 0, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    dms_forward_state_free(&st);
    dms_kv_dense_free(&c);
    return rc;
}

/* The backend picks the weight dtype and the loader converts: a CPU table
 * told to keep bf16 weights (as CUDA does) loads bf16 matrices, runs the
 * same forward within bf16 rounding of the fp32 one, and trains. */
static void bf16_weights(void) {
    dms_err err = {0};
    dms_backend bf = dms_cpu_ops;
    bf.weight_dtype = DMS_BF16;
    dms_model m32, m16;
    CHECK_MSG(dms_model_load(&m32, TINY, &dms_cpu_ops, DMS_LOAD_WEIGHTS, &err) == 0, "%s", err.msg);
    CHECK_MSG(dms_model_load(&m16, TINY, &bf, DMS_LOAD_WEIGHTS, &err) == 0, "%s", err.msg);
    CHECK(m32.layers[0].wq.dtype == DMS_F32 && m16.layers[0].wq.dtype == DMS_BF16 && m16.embed.dtype == DMS_BF16);
    const int n = 12, V = m32.cfg.vocab;
    int32_t ids[12];
    for (int i = 0; i < n; i++) ids[i] = (i * 37 + 5) % V;
    float *a = malloc(sizeof(float) * (size_t)n * V), *b = malloc(sizeof(float) * (size_t)n * V);
    if (a && b && logits_of(&m32, ids, n, a) == 0 && logits_of(&m16, ids, n, b) == 0) {
        double mx = 0, sc = 0;
        for (size_t i = 0; i < (size_t)n * V; i++) {
            mx = fmax(mx, fabs((double)a[i] - b[i]));
            sc = fmax(sc, fabs((double)a[i]));
        }
        printf("bf16 weights: logits max abs diff %.3g (max |logit| %.3g)\n", mx, sc);
        CHECK_MSG(mx > 0 && mx < 2e-2 * sc, "bf16 logits differ by %.3g of %.3g", mx, sc);
    }
    free(a);
    free(b);
    dms_train_config cfg;
    dms_train_config_defaults(&cfg);
    cfg.max_len = n;
    cfg.window = 2;
    int32_t seg[12] = {0};
    const dms_row row = {ids, seg, NULL, 0, 0};
    dms_trainer *tr = dms_trainer_create(&m16, &cfg, &err);
    CHECK_MSG(tr != NULL, "%s", err.msg);
    dms_step_stats st;
    if (tr) CHECK_MSG(dms_trainer_grads(tr, &row, 1, 0, n, 1, &st, &err) == 0 && st.finite, "%s", err.msg);
    dms_trainer_free(tr);
    dms_model_free(&m32);
    dms_model_free(&m16);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dms_cfg_XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
    defaults_and_source();
    round_trip();
    bad_fields();
    size_limits();
    neuron_checkpoint();
    adapter_checkpoint_needs_tensors();
    base_weights_frozen();
    bf16_weights();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    CHECK(system(cmd) == 0);
    return dms_check_finish();
}
