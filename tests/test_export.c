/* test_export.c - `dms export` (model/export.c): run folders with a
 * checkpoint of non-zero heads and LoRA are written here directly
 * (train/checkpoint.h), exported, and the export is reloaded with our own
 * loader. Checked: config.json keeps every source field and carries the
 * dms_* fields (block-size rule); tensor names and shapes (a neuron export
 * has exactly the source's; its q_proj rows are the trained rows); logits
 * through the dense cache equal the in-memory model's (heads + LoRA as
 * branches) to 1e-5, and the adapter heads come back bit-identical; bf16 /
 * fp16 files are the roundings of the fp32 ones; sharding covers every
 * tensor and reloads to the same logits; a GGUF source (the tiny Llama
 * fixture, q/k permuted, llama3 rope as rope_freqs) gets a synthesised
 * config.json and a tokenizer.json that encode exactly as the GGUF does
 * (also on the embedded SmolLM2); the error cases name the file. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/half.h"
#include "core/mapped_file.h"
#include "model/export.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "model/safetensors_write.h"
#include "model/tokenizer_export.h"
#include "runtime/kv_dense.h"
#include "tests/check.h"
#include "train/checkpoint.h"
#include "train/train_config.h"

#define QWEN3 "tests/fixtures/models/tiny_qwen3"
#define QWEN2 "tests/fixtures/models/tiny_qwen2"
#define LLAMA "tests/fixtures/models/tiny_llama"
#define GGUF_TINY "tests/fixtures/export/tiny_llama.gguf"

static char root[] = "/tmp/dms_test_export_XXXXXX";
static const char *const lora_names[DMS_LORA_N] = {"q_proj", "k_proj", "v_proj", "o_proj"};

static const char *default_gguf(void) {
    const char *p = getenv("DMS_DEFAULT_GGUF");
    return p && *p ? p : "models/default.gguf";
}

/* ---- a run folder with a checkpoint of random, non-zero trainables ---- */

static uint64_t rng_state;
static float urand(float a) { /* uniform in [-a, a] */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return a * (2.0f * (float)((rng_state >> 40) & 0xffffff) / 16777216.0f - 1.0f);
}

static void add_tensor(dms_ckpt *ck, const char *name, int rows, int cols, float base, float amp) {
    const size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    float *v = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) v[i] = base + urand(amp);
    int64_t shape[2] = {rows, cols};
    char full[256];
    snprintf(full, sizeof full, "params/%s", name);
    dms_ckpt_add_tensor(ck, full, v, cols ? 2 : 1, shape);
    free(v);
}

/* RUN = root/name with config.json and ckpt-<step>.h5 for `model`. */
static const char *make_run(const char *name, const char *model, const char *variant, int lora_rank, int window,
                            int64_t step, uint64_t seed) {
    static char run[512];
    snprintf(run, sizeof run, "%s/%s", root, name);
    dms_err err = {0};
    CHECK(dms_mkdir_p(run, &err) == 0);
    char json[2048];
    snprintf(json, sizeof json,
             "{\"model\": \"%s\", \"data\": \"unused\", \"output\": \"%s\", \"variant\": \"%s\", \"lora_rank\": %d,"
             " \"lora_alpha\": 8, \"window\": %d, \"seed\": 7, \"sinks\": %d}",
             model, run, variant, lora_rank, window, window == 32 ? 3 : 0);
    dms_train_config cfg;
    dms_train_config_defaults(&cfg);
    CHECK_MSG(dms_train_config_parse(&cfg, json, "test config", &err) == 0, "%s", err.msg);
    char *resolved = dms_train_config_to_json(&cfg);
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", run);
    FILE *f = fopen(path, "w");
    fputs(resolved, f);
    fclose(f);
    dms_model m;
    CHECK_MSG(dms_model_load(&m, model, &dms_cpu_ops, DMS_LOAD_WEIGHTS, &err) == 0, "%s", err.msg);
    const dms_config *c = &m.cfg;
    const int d = c->hidden, KV = c->n_kv_heads, qd = c->n_heads * c->head_dim, kvd = KV * c->head_dim;
    rng_state = seed;
    dms_ckpt *ck = dms_ckpt_new();
    char n[192];
    for (int l = 0; l < c->n_layers; l++) {
        if (!strcmp(variant, "adapter")) {
            snprintf(n, sizeof n, "model.layers.%d.self_attn.dms_proj_alpha.weight", l);
            add_tensor(ck, n, KV, d, 0, 0.05f);
            snprintf(n, sizeof n, "model.layers.%d.self_attn.dms_proj_alpha_norm.weight", l);
            add_tensor(ck, n, d, 0, 1, 0.1f);
        } else {
            snprintf(n, sizeof n, "model.layers.%d.self_attn.q_proj.dms_rows", l);
            add_tensor(ck, n, KV, d, 0, 0.1f);
        }
        for (int j = 0; j < DMS_LORA_N && lora_rank > 0; j++) {
            const int in = j == DMS_LORA_O ? qd : d, out = j == DMS_LORA_Q ? qd : j == DMS_LORA_O ? d : kvd;
            snprintf(n, sizeof n, "model.layers.%d.self_attn.%s.lora_A.weight", l, lora_names[j]);
            add_tensor(ck, n, lora_rank, in, 0, 0.2f);
            snprintf(n, sizeof n, "model.layers.%d.self_attn.%s.lora_B.weight", l, lora_names[j]);
            add_tensor(ck, n, out, lora_rank, 0, 0.05f);
        }
    }
    dms_ckpt_add_str(ck, "config", resolved);
    dms_ckpt_add_i64(ck, "step", step);
    CHECK_MSG(dms_ckpt_save(run, step, ck, 0, &err) == 0, "%s", err.msg);
    dms_ckpt_free(ck);
    dms_model_free(&m);
    free(resolved);
    return run;
}

static dms_export_opts opts(const char *run, const char *out, dms_export_dtype dt) {
    dms_export_opts o;
    dms_export_opts_defaults(&o);
    o.run = run;
    o.out = out;
    o.dtype = dt;
    return o;
}

/* ---- logits ---- */

static const int32_t IDS[] = {5, 17, 200, 3, 77, 411, 9, 120, 33, 250, 64, 1, 302, 45, 8, 499};
#define N_IDS (int)(sizeof IDS / sizeof IDS[0])

/* Logits [N_IDS, vocab] through the plain cache; student = 1 runs the DMS
 * heads and the LoRA branches (the dense cache attends over everything). */
static float *logits_of(const dms_model *m, int student) {
    dms_err err = {0};
    dms_kv_dense kv;
    dms_forward_state fs;
    float *out = malloc(sizeof(float) * (size_t)N_IDS * m->cfg.vocab);
    int rc = dms_kv_dense_init(&kv, m, N_IDS, &err);
    if (rc == 0) rc = dms_forward_state_init(&fs, m, N_IDS, &err);
    kv.base.attn.student = student;
    if (rc == 0) rc = dms_model_forward(m, &kv.base, &fs, IDS, N_IDS, out, 0, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    dms_forward_state_free(&fs);
    dms_kv_dense_free(&kv);
    return out;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]));
    return worst;
}

static void check_logits(const dms_model *a, int sa, const dms_model *b, int sb, const char *what) {
    float *x = logits_of(a, sa), *y = logits_of(b, sb);
    const double d = max_diff(x, y, (size_t)N_IDS * a->cfg.vocab);
    CHECK_MSG(d <= 1e-5, "%s: max |logit diff| %.3g", what, d);
    free(x);
    free(y);
}

/* ---- files ---- */

static cJSON *read_json(const char *path) {
    dms_err err = {0};
    char *t = dms_read_text_file(path, NULL, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    cJSON *j = t ? cJSON_Parse(t) : NULL;
    free(t);
    CHECK_MSG(j != NULL, "%s: not JSON", path);
    return j;
}

/* config.json keeps every field of the source's and adds the dms_* fields. */
static void check_config(const char *src_dir, const char *out, int adapter, int window, const char *torch_dtype) {
    char p[600];
    snprintf(p, sizeof p, "%s/config.json", src_dir);
    cJSON *src = read_json(p);
    snprintf(p, sizeof p, "%s/config.json", out);
    cJSON *exp = read_json(p);
    if (!src || !exp) goto done;
    for (cJSON *e = src->child; e; e = e->next) {
        if (!strcmp(e->string, "torch_dtype")) continue;
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(exp, e->string);
        CHECK_MSG(x && cJSON_Compare(e, x, 1), "%s: source field '%s' changed or lost", out, e->string);
    }
    const cJSON *td = cJSON_GetObjectItemCaseSensitive(exp, "torch_dtype");
    CHECK(cJSON_IsString(td) && !strcmp(td->valuestring, torch_dtype));
    const cJSON *sep = cJSON_GetObjectItemCaseSensitive(exp, "dms_separate_alpha");
    CHECK(cJSON_IsBool(sep) && cJSON_IsTrue(sep) == adapter);
    CHECK(cJSON_GetObjectItemCaseSensitive(exp, "dms_window_size")->valuedouble == window);
    const int bs = (int)cJSON_GetObjectItemCaseSensitive(exp, "dms_paged_attention_block_size")->valuedouble;
    CHECK_MSG(bs == dms_export_block_size(window) && bs < window, "block size %d for window %d", bs, window);
    CHECK(cJSON_GetObjectItemCaseSensitive(exp, "dms_alpha_scale")->valuedouble == 100);
    CHECK(cJSON_GetObjectItemCaseSensitive(exp, "dms_initial_alpha_offset")->valuedouble == 5);
    CHECK(cJSON_GetObjectItemCaseSensitive(exp, "dms_tau")->valuedouble == 0.1); /* written as 0.1, not 0.100000001 */
    CHECK_STR(cJSON_GetObjectItemCaseSensitive(exp, "dms_alpha_per")->valuestring, "head");
    CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(exp, "dms_cr")));
    CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(exp, "dms_disable_eviction")));
    const cJSON *sinks = cJSON_GetObjectItemCaseSensitive(exp, "dms_sink_tokens"); /* the run's "sinks" */
    CHECK(cJSON_IsNumber(sinks) && sinks->valuedouble == (window == 32 ? 3 : 0));
done:
    cJSON_Delete(src);
    cJSON_Delete(exp);
}

/* Every tensor of the source under the same name and shape; extra = the
 * names the export may add (NULL: none). */
static void check_names(const char *src_dir, const char *out, int n_extra, int KV, int d) {
    dms_err err = {0};
    dms_safetensors a, b;
    CHECK_MSG(dms_st_open_dir(&a, src_dir, &err) == 0, "%s", err.msg);
    CHECK_MSG(dms_st_open_dir(&b, out, &err) == 0, "%s", err.msg);
    CHECK_MSG(b.n_tensors == a.n_tensors + n_extra, "%s: %d tensors, source %d + %d", out, b.n_tensors, a.n_tensors,
              n_extra);
    for (int i = 0; i < a.n_tensors; i++) {
        const dms_st_tensor *x = &a.tensors[i], *y = dms_st_find(&b, x->name);
        CHECK_MSG(y && y->n_dims == x->n_dims && !memcmp(x->shape, y->shape, sizeof(int64_t) * (size_t)x->n_dims),
                  "%s: tensor '%s' missing or reshaped", out, x->name);
    }
    for (int i = 0; i < b.n_tensors; i++) {
        const dms_st_tensor *y = &b.tensors[i];
        if (dms_st_find(&a, y->name)) continue;
        const int w = strstr(y->name, "dms_proj_alpha.weight") != NULL, nrm = strstr(y->name, "dms_proj_alpha_norm") != NULL;
        CHECK_MSG(w || nrm, "%s: unexpected tensor '%s'", out, y->name);
        if (w) CHECK(y->n_dims == 2 && y->shape[0] == KV && y->shape[1] == d);
        if (nrm) CHECK(y->n_dims == 1 && y->shape[0] == d);
    }
    dms_st_close(&a);
    dms_st_close(&b);
}

static float *tensor_f32(const dms_safetensors *st, const char *name) {
    dms_err err = {0};
    const dms_st_tensor *t = dms_st_find(st, name);
    CHECK_MSG(t != NULL, "no tensor '%s'", name);
    if (!t) return NULL;
    float *v = malloc(sizeof(float) * (size_t)dms_st_nelem(t));
    CHECK_MSG(dms_st_to_f32(st, t, v, &err) == 0, "%s", err.msg);
    return v;
}

/* W + scale * B A, computed naively here. */
static void naive_merge(float *w, const float *a, const float *b, int out, int in, int r, float scale) {
    for (int i = 0; i < out; i++)
        for (int j = 0; j < in; j++) {
            double s = 0;
            for (int k = 0; k < r; k++) s += (double)b[(size_t)i * r + k] * a[(size_t)k * in + j];
            w[(size_t)i * in + j] += (float)(scale * s);
        }
}

/* ---- cases ---- */

/* Adapter + LoRA on Qwen3, fp32: config, names, heads, logits, LoRA merge;
 * then bf16 and fp16 exports of the same run are the roundings of the fp32 one. */
static void adapter_lora(void) {
    dms_err err = {0};
    const char *run = make_run("run_a", QWEN3, "adapter", 4, 8, 3, 11);
    char out[512], out16[512], outh[512];
    snprintf(out, sizeof out, "%s/exp_a", root);
    dms_export_opts o = opts(run, out, DMS_EXPORT_FP32);
    dms_export_result res;
    CHECK_MSG(dms_export_run(&o, &res, &err) == 0, "%s", err.msg);
    CHECK(res.step == 3 && res.n_shards == 1 && !strcmp(res.variant, "adapter") && !strcmp(res.dtype, "fp32"));
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", out);
    CHECK(dms_is_file(p));
    snprintf(p, sizeof p, "%s/generation_config.json", out);
    CHECK_MSG(dms_is_file(p), "source files not copied");
    dms_model mem, re;
    CHECK_MSG(dms_export_load_run(&mem, &o, NULL, &err) == 0, "%s", err.msg);
    CHECK_MSG(dms_model_load(&re, out, &dms_cpu_ops, DMS_LOAD_WEIGHTS, &err) == 0, "%s", err.msg);
    const dms_config *c = &mem.cfg;
    check_config(QWEN3, out, 1, 8, "float32");
    check_names(QWEN3, out, 2 * c->n_layers, c->n_kv_heads, c->hidden);
    CHECK(re.has_heads && re.cfg.dms.separate_alpha && re.cfg.dms.window == 8 && re.lora_rank == 0);
    for (int l = 0; l < c->n_layers && re.has_heads; l++) { /* the trained heads, bit for bit */
        const dms_heads *a = &mem.layers[l].heads, *b = &re.layers[l].heads;
        CHECK(!memcmp(a->w_a.data, b->w_a.data, sizeof(float) * (size_t)c->n_kv_heads * c->hidden));
        CHECK(!memcmp(a->w_a_norm, b->w_a_norm, sizeof(float) * (size_t)c->hidden));
    }
    check_logits(&mem, 1, &re, 1, "adapter+LoRA, student");
    check_logits(&mem, 1, &re, 0, "adapter+LoRA vs the plain export"); /* heads do not change dense logits */
    /* the merge itself: k_proj = W + s B A, against a naive product */
    dms_safetensors src, ex;
    CHECK(dms_st_open_dir(&src, QWEN3, &err) == 0 && dms_st_open_dir(&ex, out, &err) == 0);
    float *w = tensor_f32(&src, "model.layers.1.self_attn.k_proj.weight");
    float *got = tensor_f32(&ex, "model.layers.1.self_attn.k_proj.weight");
    const dms_lora *lo = &mem.layers[1].lora[DMS_LORA_K];
    const int kvd = c->n_kv_heads * c->head_dim;
    if (w && got) {
        CHECK(max_diff(w, got, (size_t)kvd * c->hidden) > 1e-3); /* LoRA changed it */
        naive_merge(w, lo->a.data, lo->b.data, kvd, c->hidden, 4, mem.lora_scale);
        CHECK_MSG(max_diff(w, got, (size_t)kvd * c->hidden) < 1e-6, "LoRA merge %.3g",
                  max_diff(w, got, (size_t)kvd * c->hidden));
    }
    free(w);
    free(got);
    /* bf16 and fp16 exports of the same checkpoint */
    snprintf(out16, sizeof out16, "%s/exp_a_bf16", root);
    snprintf(outh, sizeof outh, "%s/exp_a_fp16", root);
    dms_export_opts ob = opts(run, out16, DMS_EXPORT_BF16), oh = opts(run, outh, DMS_EXPORT_FP16);
    CHECK_MSG(dms_export_run(&ob, NULL, &err) == 0, "%s", err.msg);
    CHECK_MSG(dms_export_run(&oh, NULL, &err) == 0, "%s", err.msg);
    dms_safetensors sb, sh;
    CHECK(dms_st_open_dir(&sb, out16, &err) == 0 && dms_st_open_dir(&sh, outh, &err) == 0);
    CHECK(sb.n_tensors == ex.n_tensors && sh.n_tensors == ex.n_tensors);
    size_t bad_b = 0, bad_h = 0, total = 0;
    for (int i = 0; i < ex.n_tensors && sb.n_tensors == ex.n_tensors && sh.n_tensors == ex.n_tensors; i++) {
        const dms_st_tensor *t = &ex.tensors[i], *tb = &sb.tensors[i], *th = &sh.tensors[i];
        CHECK(!strcmp(t->name, tb->name) && tb->dtype == DMS_ST_BF16 && th->dtype == DMS_ST_F16);
        const float *f = (const float *)t->data;
        for (int64_t k = 0; k < dms_st_nelem(t); k++, total++) {
            uint16_t hb, hh;
            memcpy(&hb, tb->data + 2 * k, 2);
            memcpy(&hh, th->data + 2 * k, 2);
            bad_b += hb != dms_f32_to_bf16(f[k]);
            const float back = dms_f16_to_f32(hh); /* the nearest half: within half an ulp */
            bad_h += fabsf(back - f[k]) > fmaxf(fabsf(f[k]) * (1.0f / 2048), 3e-8f);
        }
    }
    CHECK_MSG(bad_b == 0 && bad_h == 0 && total > 0, "%zu bf16 and %zu fp16 values of %zu are not the roundings", bad_b,
              bad_h, total);
    snprintf(p, sizeof p, "%s/config.json", out16);
    cJSON *j = read_json(p);
    CHECK(j && !strcmp(cJSON_GetObjectItemCaseSensitive(j, "torch_dtype")->valuestring, "bfloat16"));
    cJSON_Delete(j);
    dms_st_close(&sb);
    dms_st_close(&sh);
    dms_st_close(&src);
    dms_st_close(&ex);
    dms_model_free(&mem);
    dms_model_free(&re);
}

/* Neuron on Qwen3: exactly the source's tensors; q_proj rows = the trained
 * rows (without LoRA, bit for bit), every other value the source's; with
 * LoRA the rows carry the merged delta and the logits still agree. */
static void neuron(int lora_rank) {
    dms_err err = {0};
    char name[32], out[512];
    snprintf(name, sizeof name, "run_n%d", lora_rank);
    const char *run = make_run(name, QWEN3, "neuron", lora_rank, 16, 2, 23 + (uint64_t)lora_rank);
    snprintf(out, sizeof out, "%s/exp_n%d", root, lora_rank);
    dms_export_opts o = opts(run, out, DMS_EXPORT_FP32);
    CHECK_MSG(dms_export_run(&o, NULL, &err) == 0, "%s", err.msg);
    dms_model mem, re;
    CHECK_MSG(dms_export_load_run(&mem, &o, NULL, &err) == 0, "%s", err.msg);
    CHECK_MSG(dms_model_load(&re, out, &dms_cpu_ops, DMS_LOAD_WEIGHTS, &err) == 0, "%s", err.msg);
    const dms_config *c = &mem.cfg;
    check_config(QWEN3, out, 0, 16, "float32");
    check_names(QWEN3, out, 0, c->n_kv_heads, c->hidden); /* nvidia/Qwen3-8B-DMS-8x: standard names only */
    CHECK(re.has_heads && !re.cfg.dms.separate_alpha);
    dms_safetensors src, ex;
    CHECK(dms_st_open_dir(&src, QWEN3, &err) == 0 && dms_st_open_dir(&ex, out, &err) == 0);
    const int qd = c->n_heads * c->head_dim, d = c->hidden;
    for (int l = 0; l < c->n_layers; l++) {
        char n[128];
        snprintf(n, sizeof n, "model.layers.%d.self_attn.q_proj.weight", l);
        float *w = tensor_f32(&src, n), *got = tensor_f32(&ex, n);
        if (!w || !got) break;
        const float *rows = mem.layers[l].heads.q_rows.data;
        for (int k = 0; k < c->n_kv_heads; k++) /* what the export should hold: the trained rows */
            memcpy(w + (size_t)dms_neuron_row(c, k) * d, rows + (size_t)k * d, sizeof(float) * (size_t)d);
        if (lora_rank == 0) {
            CHECK_MSG(!memcmp(w, got, sizeof(float) * (size_t)qd * d), "layer %d: q_proj is not source + trained rows", l);
        } else {
            const dms_lora *lo = &mem.layers[l].lora[DMS_LORA_Q];
            naive_merge(w, lo->a.data, lo->b.data, qd, d, lora_rank, mem.lora_scale);
            CHECK_MSG(max_diff(w, got, (size_t)qd * d) < 1e-6, "layer %d: merged q_proj off by %.3g", l,
                      max_diff(w, got, (size_t)qd * d));
        }
        /* the reloaded model reads its decision rows back out of q_proj */
        for (int k = 0; k < c->n_kv_heads; k++)
            CHECK(!memcmp(re.layers[l].heads.q_rows.data + sizeof(float) * (size_t)k * d,
                          got + (size_t)dms_neuron_row(c, k) * d, sizeof(float) * (size_t)d));
        free(w);
        free(got);
    }
    check_logits(&mem, 1, &re, 1, lora_rank ? "neuron+LoRA, student" : "neuron, student");
    dms_st_close(&src);
    dms_st_close(&ex);
    dms_model_free(&mem);
    dms_model_free(&re);
}

/* Qwen2 (q/k/v bias, bf16 shards) with a tiny --shard-size: an index whose
 * weight_map covers every tensor in the file it names; same logits. */
static void sharded(void) {
    dms_err err = {0};
    const char *run = make_run("run_s", QWEN2, "adapter", 2, 32, 5, 5);
    char out[512], p[600];
    snprintf(out, sizeof out, "%s/exp_s", root);
    dms_export_opts o = opts(run, out, DMS_EXPORT_FP32);
    o.shard_mb = 0.05; /* 50 kB */
    dms_export_result res;
    CHECK_MSG(dms_export_run(&o, &res, &err) == 0, "%s", err.msg);
    CHECK_MSG(res.n_shards > 3, "%d shards", res.n_shards);
    snprintf(p, sizeof p, "%s/model.safetensors", out);
    CHECK(!dms_is_file(p));
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", out);
    cJSON *idx = read_json(p);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
    const cJSON *total = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(idx, "metadata"), "total_size");
    CHECK(cJSON_IsObject(map) && cJSON_IsNumber(total) && total->valuedouble == (double)res.bytes);
    CHECK(cJSON_GetArraySize(map) == res.n_tensors);
    double sum = 0;
    for (const cJSON *e = map ? map->child : NULL; e; e = e->next) {
        char f[600];
        snprintf(f, sizeof f, "%s/%s", out, e->valuestring);
        dms_safetensors one;
        if (dms_st_open_file(&one, f, &err) != 0) {
            CHECK_MSG(0, "%s", err.msg);
            continue;
        }
        const dms_st_tensor *t = dms_st_find(&one, e->string);
        CHECK_MSG(t != NULL, "%s not in %s", e->string, e->valuestring);
        if (t) sum += (double)t->nbytes;
        dms_st_close(&one);
    }
    CHECK(sum == (double)res.bytes);
    cJSON_Delete(idx);
    dms_model mem, re;
    CHECK_MSG(dms_export_load_run(&mem, &o, NULL, &err) == 0, "%s", err.msg);
    CHECK_MSG(dms_model_load(&re, out, &dms_cpu_ops, DMS_LOAD_WEIGHTS, &err) == 0, "%s", err.msg);
    check_config(QWEN2, out, 1, 32, "float32");
    check_names(QWEN2, out, 2 * mem.cfg.n_layers, mem.cfg.n_kv_heads, mem.cfg.hidden);
    check_logits(&mem, 1, &re, 1, "qwen2 sharded, student");
    check_logits(&mem, 1, &re, 0, "qwen2 sharded, plain");
    dms_model_free(&mem);
    dms_model_free(&re);
}

/* The tokenizer of a folder (tokenizer.json + tokenizer_config.json)
 * against the GGUF's: same hash, ids, specials and template. */
static void check_tokenizer_same(const dms_tokenizer *g, const char *dir) {
    dms_err err = {0};
    char tj[600], tc[600];
    snprintf(tj, sizeof tj, "%s/tokenizer.json", dir);
    snprintf(tc, sizeof tc, "%s/tokenizer_config.json", dir);
    dms_tokenizer *t = dms_tokenizer_from_json(tj, tc, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (!t || !g) return;
    CHECK_MSG(dms_tokenizer_hash(t) == dms_tokenizer_hash(g), "%s: tokenizer hash differs from the GGUF's", dir);
    CHECK(dms_tokenizer_vocab_size(t) == dms_tokenizer_vocab_size(g));
    CHECK(dms_tokenizer_bos(t) == dms_tokenizer_bos(g) && dms_tokenizer_eos(t) == dms_tokenizer_eos(g));
    CHECK(dms_tokenizer_add_bos(t) == dms_tokenizer_add_bos(g));
    const char *ta = dms_tokenizer_chat_template(t), *tb = dms_tokenizer_chat_template(g);
    CHECK((!ta && !tb) || (ta && tb && !strcmp(ta, tb)));
    static const char *texts[] = {
        "Hello world! This is a test of the tokenizer, isn't it? We'll see, I'd say.",
        "Numbers: 1234567 and 3.14159, 2024-06-01; v2 x86_64",
        "def foo(x):\n    return x * 2\n\n\n",
        "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x91\x8b   spaces  \r\n",
        "<|im_start|>user\nHi<|im_end|><|begin_of_text|><|eot_id|>",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        for (int special = 0; special < 2; special++) {
            int32_t *a = NULL, *b = NULL;
            size_t na = 0, nb = 0;
            CHECK(dms_tokenizer_encode(t, texts[i], strlen(texts[i]), special, &a, &na, &err) == 0);
            CHECK(dms_tokenizer_encode(g, texts[i], strlen(texts[i]), special, &b, &nb, &err) == 0);
            CHECK_MSG(na == nb && (na == 0 || !memcmp(a, b, sizeof(int32_t) * na)), "text %zu encodes differently", i);
            free(a);
            free(b);
        }
    dms_tokenizer_free(t);
}

/* A GGUF source: synthesised config.json (llama3 rope from rope_freqs,
 * tied embeddings), no lm_head, the tiny Llama's reference logits, the
 * tokenizer written from the metadata. */
static void gguf_source(void) {
    dms_err err = {0};
    const char *run = make_run("run_g", GGUF_TINY, "adapter", 0, 64, 4, 99);
    char out[512], p[600];
    snprintf(out, sizeof out, "%s/exp_g", root);
    dms_export_opts o = opts(run, out, DMS_EXPORT_FP32);
    CHECK_MSG(dms_export_run(&o, NULL, &err) == 0, "%s", err.msg);
    snprintf(p, sizeof p, "%s/config.json", out);
    cJSON *exp = read_json(p), *src = read_json(LLAMA "/config.json");
    static const char *same[] = {"hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                                 "head_dim", "num_hidden_layers", "vocab_size", "max_position_embeddings",
                                 "rms_norm_eps", "rope_theta", "tie_word_embeddings", "model_type",
                                 "architectures", "hidden_act", "attention_bias"};
    for (size_t i = 0; exp && src && i < sizeof same / sizeof same[0]; i++)
        CHECK_MSG(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(exp, same[i]),
                                cJSON_GetObjectItemCaseSensitive(src, same[i]), 1),
                  "synthesised '%s' differs from the Hugging Face original", same[i]);
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(exp, "rope_scaling");
    const cJSON *rs0 = cJSON_GetObjectItemCaseSensitive(src, "rope_scaling");
    static const char *rkeys[] = {"rope_type", "factor", "low_freq_factor", "high_freq_factor",
                                  "original_max_position_embeddings"};
    for (size_t i = 0; i < sizeof rkeys / sizeof rkeys[0]; i++)
        CHECK_MSG(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(rs, rkeys[i]),
                                cJSON_GetObjectItemCaseSensitive(rs0, rkeys[i]), 1),
                  "rope_scaling.%s not recovered from rope_freqs.weight", rkeys[i]);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(exp, "dms_separate_alpha")));
    cJSON_Delete(exp);
    cJSON_Delete(src);
    dms_safetensors ex;
    CHECK(dms_st_open_dir(&ex, out, &err) == 0);
    CHECK(!dms_st_find(&ex, "lm_head.weight") && dms_st_find(&ex, "model.embed_tokens.weight"));
    CHECK(ex.n_tensors == 2 + 2 * 9 + 2 * 2); /* embed, norm; 9 per layer; 2 heads per layer */
    dms_st_close(&ex);
    /* the export (q/k back in HF order) gives the original HF model's logits */
    dms_model re, mem, gg;
    CHECK_MSG(dms_model_load(&re, out, &dms_cpu_ops, DMS_LOAD_WEIGHTS | DMS_LOAD_TOKENIZER, &err) == 0, "%s", err.msg);
    CHECK_MSG(dms_export_load_run(&mem, &o, NULL, &err) == 0, "%s", err.msg);
    CHECK_MSG(dms_model_load(&gg, GGUF_TINY, &dms_cpu_ops, DMS_LOAD_WEIGHTS | DMS_LOAD_TOKENIZER, &err) == 0, "%s",
              err.msg);
    dms_safetensors ref;
    CHECK(dms_st_open_file(&ref, LLAMA "/reference.safetensors", &err) == 0);
    const dms_st_tensor *ids = dms_st_find(&ref, "input_ids"), *lg = dms_st_find(&ref, "logits");
    if (ids && lg) {
        const int T = (int)ids->shape[1], V = re.cfg.vocab;
        dms_kv_dense kv;
        dms_forward_state fs;
        float *logits = malloc(sizeof(float) * (size_t)T * V);
        CHECK(dms_kv_dense_init(&kv, &re, T, &err) == 0 && dms_forward_state_init(&fs, &re, T, &err) == 0);
        CHECK(dms_model_forward(&re, &kv.base, &fs, (const int32_t *)ids->data, T, logits, 0, &err) == 0);
        double worst = 0;
        for (size_t i = 0; i < (size_t)T * V; i++)
            worst = fmax(worst, fabs((double)logits[i] - ((const float *)lg->data)[i]));
        CHECK_MSG(worst < 1e-4, "export of the GGUF vs transformers on the original: %.3g", worst);
        dms_forward_state_free(&fs);
        dms_kv_dense_free(&kv);
        free(logits);
    }
    dms_st_close(&ref);
    check_logits(&gg, 0, &re, 0, "GGUF vs its export, plain");
    check_logits(&mem, 1, &re, 1, "GGUF run vs its export, student");
    check_tokenizer_same(gg.tok, out);
    dms_model_free(&re);
    dms_model_free(&mem);
    dms_model_free(&gg);
}

/* The embedded SmolLM2 GGUF: tokenizer.json from its metadata encodes as
 * the GGUF does (same hash), and the synthesised config reloads to the
 * same architecture. Metadata only: no weights are read. */
static void smollm2_metadata(void) {
    dms_err err = {0};
    dms_model m;
    if (dms_model_load(&m, default_gguf(), &dms_cpu_ops, DMS_LOAD_TOKENIZER, &err) != 0) {
        CHECK_MSG(0, "%s (run scripts/install_deps.sh for the embedded model)", err.msg);
        return;
    }
    char dir[512], p[600];
    snprintf(dir, sizeof dir, "%s/smollm2_meta", root);
    CHECK(dms_mkdir_p(dir, &err) == 0);
    dms_gguf g;
    CHECK_MSG(dms_gguf_open(&g, default_gguf(), &err) == 0, "%s", err.msg);
    CHECK_MSG(dms_tokenizer_export_gguf(&g, dir, m.cfg.max_pos, &err) == 0, "%s", err.msg);
    dms_gguf_close(&g);
    check_tokenizer_same(m.tok, dir);
    char *cfg = dms_export_config_json(&m, DMS_EXPORT_BF16, &err);
    CHECK_MSG(cfg != NULL, "%s", err.msg);
    snprintf(p, sizeof p, "%s/config.json", dir);
    CHECK(cfg && dms_write_file_synced(p, cfg, strlen(cfg), &err) == 0);
    free(cfg);
    dms_model r;
    CHECK_MSG(dms_model_load(&r, dir, &dms_cpu_ops, DMS_LOAD_TOKENIZER, &err) == 0, "%s", err.msg);
    const dms_config *a = &m.cfg, *b = &r.cfg;
    CHECK(a->arch == b->arch && a->n_layers == b->n_layers && a->hidden == b->hidden &&
          a->intermediate == b->intermediate && a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads &&
          a->head_dim == b->head_dim && a->vocab == b->vocab && a->max_pos == b->max_pos &&
          a->rms_eps == b->rms_eps && a->rope_theta == b->rope_theta && a->rope_kind == b->rope_kind &&
          a->tie_embeddings == b->tie_embeddings && a->qkv_bias == b->qkv_bias && a->bos_id == b->bos_id &&
          a->eos_id == b->eos_id);
    CHECK(!b->dms.present); /* a base model: no dms_* fields */
    dms_model_free(&r);
    dms_model_free(&m);
}

/* Every half: f16 -> f32 -> f16 is exact; halfway points round to even. */
static void f16_rounding(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue; /* inf / NaN */
        const float f = dms_f16_to_f32((uint16_t)h);
        bad += dms_f32_to_f16(f) != h;
        if ((h & 0x7fff) < 0x7bff) { /* the midpoint to the next half up in magnitude */
            const float g = dms_f16_to_f32((uint16_t)(h + 1));
            const float mid = (float)(((double)f + g) / 2);
            const uint16_t want = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            bad += dms_f32_to_f16(mid) != want;
        }
    }
    CHECK_MSG(bad == 0, "%d fp16 roundings wrong", bad);
    CHECK(dms_f32_to_f16(65520.0f) == 0x7c00 && dms_f32_to_f16(-1e9f) == 0xfc00 && dms_f32_to_f16(1e-9f) == 0);
    CHECK(dms_export_block_size(512) == 256 && dms_export_block_size(256) == 128 && dms_export_block_size(16) == 8 &&
          dms_export_block_size(100) == 32 && dms_export_block_size(4096) == 256);
}

/* Refusals: no checkpoint, a missing --step, a non-empty --out (replaced
 * only with force), a checkpoint that does not fit the model. Nothing is
 * left behind by a failed export. */
static void errors(void) {
    dms_err err = {0};
    char run[512], out[512], p[600];
    dms_export_opts o;
    snprintf(run, sizeof run, "%s/empty_run", root);
    CHECK(dms_mkdir_p(run, &err) == 0);
    snprintf(out, sizeof out, "%s/exp_e", root);
    o = opts(run, out, DMS_EXPORT_FP32);
    CHECK(dms_export_run(&o, NULL, &err) != 0 && strstr(err.msg, run) && strstr(err.msg, "no checkpoint"));
    const char *good = make_run("run_e", QWEN3, "adapter", 4, 8, 6, 3);
    o = opts(good, out, DMS_EXPORT_FP32);
    o.step = 7;
    CHECK(dms_export_run(&o, NULL, &err) != 0 && strstr(err.msg, "ckpt-00000007.h5") &&
          strstr(err.msg, "no such checkpoint"));
    o.step = 6;
    o.model = LLAMA; /* q is 64 rows there, 128 in the checkpoint's LoRA */
    CHECK(dms_export_run(&o, NULL, &err) != 0 && strstr(err.msg, "ckpt-00000006.h5") &&
          strstr(err.msg, "params/model.layers.0.self_attn.q_proj.lora_B.weight") && strstr(err.msg, "shape"));
    CHECK(!dms_is_dir(out));
    o.model = NULL;
    CHECK(dms_mkdir_p(out, &err) == 0);
    snprintf(p, sizeof p, "%s/keep.txt", out);
    FILE *f = fopen(p, "w");
    fputs("old", f);
    fclose(f);
    CHECK(dms_export_run(&o, NULL, &err) != 0 && strstr(err.msg, out) && strstr(err.msg, "--force"));
    CHECK(dms_is_file(p));
    o.force = 1;
    CHECK_MSG(dms_export_run(&o, NULL, &err) == 0, "%s", err.msg);
    CHECK(!dms_is_file(p));
    snprintf(p, sizeof p, "%s/config.json", out);
    CHECK(dms_is_file(p));
    o = opts(good, good, DMS_EXPORT_FP32); /* --force onto the run folder itself */
    o.force = 1;
    CHECK(dms_export_run(&o, NULL, &err) != 0 && strstr(err.msg, "run folder"));
    CHECK(dms_ckpt_latest(good, p, sizeof p, &err) == 1);
    /* no temporary folder survives */
    DIR *d = opendir(root);
    for (struct dirent *e; d && (e = readdir(d));) CHECK_MSG(!strstr(e->d_name, ".tmp-"), "left behind: %s", e->d_name);
    if (d) closedir(d);
}

int main(void) {
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    f16_rounding();
    adapter_lora();
    neuron(0);
    neuron(2);
    sharded();
    gguf_source();
    smollm2_metadata();
    errors();
    if (!dms_check_st.failed) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    } else {
        fprintf(stderr, "files kept in %s\n", root);
    }
    return dms_check_finish();
}
