/* export.c - `dms export` as a library (export.h): load a run's source model
 * and its checkpointed heads / LoRA, then write a Hugging Face folder that
 * NVIDIA's DMS code, our own loader and `transformers` all open: every base
 * tensor under its Hugging Face name (LoRA merged on the host in fp32),
 * the DMS heads in NVIDIA's layout, config.json with the dms_* fields, the
 * tokenizer. Everything goes into DIR.tmp-<pid> first (files fsynced) and is
 * renamed into place only when complete, so an interrupted export never
 * leaves a folder that looks finished. */
#include "model/export.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fault_point.h"
#include "core/fs.h"
#include "core/half.h"
#include "core/mapped_file.h"
#include "kernels/dtype.h"
#include "model/gguf.h"
#include "model/safetensors_write.h"
#include "model/tokenizer_export.h"
#include "train/checkpoint.h"
#include "train/trainer.h"
#include "train/train_config.h"

static const char *const lora_names[DMS_LORA_N] = {"q_proj", "k_proj", "v_proj", "o_proj"};

void dms_export_opts_defaults(dms_export_opts *o) {
    memset(o, 0, sizeof *o);
    o->step = -1;
    o->dtype = DMS_EXPORT_BF16;
    o->shard_mb = 5000;
}

int dms_export_parse_dtype(const char *s, dms_export_dtype *out) {
    if (!s) return -1;
    if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16")) *out = DMS_EXPORT_BF16;
    else if (!strcmp(s, "fp16") || !strcmp(s, "float16") || !strcmp(s, "f16")) *out = DMS_EXPORT_FP16;
    else if (!strcmp(s, "fp32") || !strcmp(s, "float32") || !strcmp(s, "f32")) *out = DMS_EXPORT_FP32;
    else return -1;
    return 0;
}

const char *dms_export_dtype_name(dms_export_dtype t) {
    return t == DMS_EXPORT_FP32 ? "fp32" : t == DMS_EXPORT_FP16 ? "fp16" : "bf16";
}

static const char *torch_dtype_name(dms_export_dtype t) {
    return t == DMS_EXPORT_FP32 ? "float32" : t == DMS_EXPORT_FP16 ? "float16" : "bfloat16";
}

static dms_st_dtype st_dtype(dms_export_dtype t) {
    return t == DMS_EXPORT_FP32 ? DMS_ST_F32 : t == DMS_EXPORT_FP16 ? DMS_ST_F16 : DMS_ST_BF16;
}

int dms_export_block_size(int window) {
    int bs = 1;
    while (bs * 2 <= window / 2 && bs * 2 <= 256) bs *= 2;
    return bs;
}

/* The shortest decimal that reads back as the same float (0.1f -> 0.1, not
 * 0.10000000149011612), for numbers that started as floats. */
static double short_float(float f) {
    char buf[40];
    for (int p = 6; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    return strtod(buf, NULL);
}

/* ---------------------------------------------------------------- files */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p) == 0 ? 0 : -1;
}

/* rm -rf (no error if absent). */
static int remove_tree(const char *p) {
    struct stat st;
    if (lstat(p, &st) != 0) return errno == ENOENT ? 0 : -1;
    return nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* 1 if dir holds any entry, 0 if empty, -1 if it cannot be read. */
static int dir_nonempty(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int any = 0;
    for (struct dirent *e; !any && (e = readdir(d));) any = strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return any;
}

/* Absolute, symlink-free form of p (p need not exist: its parent is
 * resolved instead). */
static void abs_path(const char *p, char *out, size_t cap) {
    char buf[PATH_MAX];
    if (realpath(p, buf)) {
        snprintf(out, cap, "%s", buf);
        return;
    }
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", p);
    char *slash = strrchr(tmp, '/');
    const char *base = slash ? slash + 1 : tmp;
    if (slash) *slash = '\0';
    if (!realpath(slash ? (tmp[0] ? tmp : "/") : ".", buf) ||
        snprintf(out, cap, "%s/%s", strcmp(buf, "/") ? buf : "", base) >= (int)cap)
        snprintf(out, cap, "%s", p);
}

/* Whether a is b or a folder above it. */
static int is_same_or_above(const char *a, const char *b) {
    size_t n = strlen(a);
    return strncmp(a, b, n) == 0 && (b[n] == '\0' || b[n] == '/' || (n > 0 && a[n - 1] == '/'));
}

static int copy_file_synced(const char *src, const char *dst, dms_err *err) {
    size_t n = 0;
    char *data = dms_read_text_file(src, &n, err);
    if (!data) return -1;
    int rc = dms_write_file_synced(dst, data, n, err);
    free(data);
    return rc;
}

static int write_text(const char *dir, const char *name, const char *text, dms_err *err) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return dms_errf(err, "%s: path too long", dir);
    return dms_write_file_synced(path, text, strlen(text), err);
}

/* ---------------------------------------------------------------- load */

static int read_param(const dms_ckpt *ck, const char *path, const dms_backend *be, const char *name, float *dst,
                      int rows, int cols, dms_err *err) {
    char full[256];
    snprintf(full, sizeof full, "params/%s", name);
    if (!dms_ckpt_has(ck, full))
        return dms_errf(err, "%s: no tensor '%s' (does the run config's variant / lora_rank match the checkpoint?)",
                        path, full);
    int nd = 0;
    int64_t shape[DMS_CKPT_MAX_DIMS];
    if (dms_ckpt_tensor_shape(ck, full, &nd, shape, err) != 0) return -1;
    const int want_nd = cols ? 2 : 1;
    if (nd != want_nd || shape[0] != rows || (cols && shape[1] != cols)) {
        char got[96] = "";
        for (int d = 0; d < nd && d < 4; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? " x " : "", (long long)shape[d]);
        char want[64];
        if (cols) snprintf(want, sizeof want, "%d x %d", rows, cols);
        else snprintf(want, sizeof want, "%d", rows);
        return dms_errf(err, "%s: tensor '%s' has shape [%s], the model expects [%s]", path, full, got, want);
    }
    const size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    float *host = malloc(sizeof(float) * n);
    if (!host) return dms_errf(err, "%s: out of memory reading '%s'", path, full);
    int rc = dms_ckpt_read_tensor(ck, full, host, n, err);
    if (rc == 0) dms_upload_f32(be, dst, host, n);
    free(host);
    return rc;
}

int dms_export_load_run(dms_model *m, const dms_export_opts *o, dms_export_result *res, dms_err *err) {
    memset(m, 0, sizeof *m);
    if (!o->run || !*o->run) return dms_errf(err, "no run folder given (--run RUN)");
    if (!dms_is_dir(o->run)) return dms_errf(err, "%s: no such run folder", o->run);
    char ckpt[PATH_MAX];
    if (o->step < 0) {
        int found = dms_ckpt_latest(o->run, ckpt, sizeof ckpt, err);
        if (found < 0) return -1;
        if (found == 0) return dms_errf(err, "%s: no checkpoint (ckpt-*.h5) in this run folder", o->run);
    } else {
        dms_ckpt_path(ckpt, sizeof ckpt, o->run, o->step);
        if (!dms_is_file(ckpt)) return dms_errf(err, "%s: no such checkpoint (--step %lld)", ckpt, (long long)o->step);
    }
    dms_ckpt *ck = dms_ckpt_load(ckpt, err);
    if (!ck) return -1;
    int rc = 0;
    /* the run's resolved config: RUN/config.json, else the checkpoint's copy */
    char cfg_path[PATH_MAX];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", o->run);
    char *text = dms_is_file(cfg_path) ? dms_read_text_file(cfg_path, NULL, err) : NULL;
    const char *what = cfg_path;
    if (!text && !dms_is_file(cfg_path)) {
        text = dms_ckpt_read_str(ck, "config", err);
        what = ckpt;
    }
    dms_train_config cfg;
    dms_train_config_defaults(&cfg);
    if (!text || dms_train_config_parse(&cfg, text, what, err) != 0) rc = -1;
    free(text);
    const char *model_path = o->model ? o->model : cfg.model;
    if (rc == 0 && access(model_path, F_OK) != 0)
        rc = dms_errf(err, "%s: source model not found (%s; pass --model PATH)", model_path,
                      o->model ? "--model" : "the run config's \"model\"");
    const dms_backend *be = o->be ? o->be : &dms_cpu_ops;
    if (rc == 0 && dms_model_load(m, model_path, be, DMS_LOAD_WEIGHTS, err) != 0) rc = -1;
    /* heads and LoRA exactly as dms_trainer_create gives them */
    if (rc == 0 && dms_trainer_prepare_model(m, &cfg, err) != 0) rc = -1;
    const dms_config *c = &m->cfg;
    char name[192];
    for (int l = 0; rc == 0 && l < c->n_layers; l++) {
        dms_heads *h = &m->layers[l].heads;
        if (cfg.variant == DMS_VARIANT_ADAPTER) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.dms_proj_alpha.weight", l);
            rc = read_param(ck, ckpt, be, name, h->w_a.data, c->n_kv_heads, c->hidden, err);
            snprintf(name, sizeof name, "model.layers.%d.self_attn.dms_proj_alpha_norm.weight", l);
            if (rc == 0) rc = read_param(ck, ckpt, be, name, h->w_a_norm, c->hidden, 0, err);
        } else {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.q_proj.dms_rows", l);
            rc = read_param(ck, ckpt, be, name, h->q_rows.data, c->n_kv_heads, c->hidden, err);
        }
        for (int j = 0; rc == 0 && j < DMS_LORA_N && m->lora_rank > 0; j++) {
            const dms_lora *lo = &m->layers[l].lora[j];
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.lora_A.weight", l, lora_names[j]);
            rc = read_param(ck, ckpt, be, name, lo->a.data, lo->a.rows, lo->a.cols, err);
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.lora_B.weight", l, lora_names[j]);
            if (rc == 0) rc = read_param(ck, ckpt, be, name, lo->b.data, lo->b.rows, lo->b.cols, err);
        }
    }
    if (res) {
        snprintf(res->ckpt, sizeof res->ckpt, "%s", ckpt);
        res->step = dms_ckpt_step(ck);
    }
    dms_ckpt_free(ck);
    if (rc != 0 && m->be) dms_model_free(m);
    return rc;
}

/* ---------------------------------------------------------------- config.json */

/* rope_scaling of a GGUF model: none, linear (from metadata), or Llama 3
 * (llama.cpp stores it only as per-pair divisors in rope_freqs.weight, which
 * the loader applied to m->inv_freq): the Hugging Face parameters are fitted
 * to those divisors with low_freq_factor = 1, then checked by recomputing
 * every frequency. */
static int rope_scaling_json(const dms_model *m, cJSON **out, dms_err *err) {
    const dms_config *c = &m->cfg;
    const int half = c->head_dim / 2;
    *out = NULL;
    float *inv = malloc(sizeof(float) * (size_t)half), *base = malloc(sizeof(float) * (size_t)half),
          *chk = malloc(sizeof(float) * (size_t)half);
    if (!inv || !base || !chk) {
        free(inv);
        free(base);
        free(chk);
        return dms_errf(err, "%s: out of memory", m->path);
    }
    if (m->inv_freq) dms_download_f32(m->be, inv, m->inv_freq, (size_t)half);
    else dms_config_rope_inv_freq(c, inv); /* loaded without weights: the metadata's scaling only */
    dms_config plain = *c;
    plain.rope_kind = DMS_ROPE_DEFAULT;
    dms_config_rope_inv_freq(&plain, base);
    double rmin = 1, rmax = 1;
    for (int i = 0; i < half; i++) {
        const double r = (double)inv[i] / base[i];
        rmin = fmin(rmin, r);
        rmax = fmax(rmax, r);
    }
    int rc = 0;
    if (rmin > 1 - 1e-6 && rmax < 1 + 1e-6) goto done; /* unscaled */
    dms_config fit = *c;
    cJSON *o = cJSON_CreateObject();
    if (c->rope_kind == DMS_ROPE_LINEAR) {
        cJSON_AddNumberToObject(o, "factor", short_float(c->rope_factor));
        cJSON_AddStringToObject(o, "rope_type", "linear");
        cJSON_AddStringToObject(o, "type", "linear");
    } else {
        /* r = 1/divisor: 1 for short wavelengths, 1/factor for long ones,
         * (1-s)/factor + s in between, s = (orig/wl - low) / (high - low) */
        const double factor = 1.0 / rmin;
        double wl[2] = {0, 0}, s[2] = {0, 0}, max_unscaled = 0, min_scaled = INFINITY;
        int nb = 0;
        for (int i = 0; i < half; i++) {
            const double r = (double)inv[i] / base[i], w = 2 * M_PI / base[i];
            if (r > 1 - 1e-6) max_unscaled = fmax(max_unscaled, w);
            else if (r < 1 / factor * (1 + 1e-6)) min_scaled = fmin(min_scaled, w);
            else {
                const int k = nb == 0 ? 0 : 1; /* keep the first and the last band point */
                wl[k] = w;
                s[k] = (r - 1 / factor) / (1 - 1 / factor);
                nb++;
            }
        }
        double high = 4, orig;
        if (nb >= 2) {
            high = 1 + (wl[1] - wl[0]) / (wl[0] * s[0] - wl[1] * s[1]);
            orig = wl[0] * (s[0] * (high - 1) + 1);
        } else if (nb == 1) {
            orig = wl[0] * (s[0] * (high - 1) + 1);
        } else {
            orig = ceil(high * max_unscaled * 1.0001);
            if (!(orig < min_scaled)) orig = NAN;
        }
        if (isfinite(orig) && fabs(orig - round(orig)) < 1e-3 * orig) orig = round(orig);
        if (isfinite(high) && fabs(high - round(high)) < 1e-3) high = round(high);
        fit.rope_kind = DMS_ROPE_LLAMA3;
        fit.rope_factor = (float)factor;
        fit.rope_low_freq = 1.0f;
        fit.rope_high_freq = (float)high;
        fit.rope_orig_max_pos = isfinite(orig) && orig > 0 && orig < 1e9 ? (int)orig : 0;
        cJSON_AddNumberToObject(o, "factor", short_float(fit.rope_factor));
        cJSON_AddNumberToObject(o, "high_freq_factor", short_float(fit.rope_high_freq));
        cJSON_AddNumberToObject(o, "low_freq_factor", 1.0);
        cJSON_AddNumberToObject(o, "original_max_position_embeddings", fit.rope_orig_max_pos);
        cJSON_AddStringToObject(o, "rope_type", "llama3");
    }
    if (fit.rope_kind == DMS_ROPE_LLAMA3 && fit.rope_orig_max_pos <= 0) {
        rc = -1;
    } else {
        dms_config_rope_inv_freq(&fit, chk);
        for (int i = 0; i < half && rc == 0; i++)
            if (fabs((double)chk[i] - inv[i]) > 1e-5 * fabs((double)inv[i])) rc = -1;
    }
    if (rc != 0) {
        cJSON_Delete(o);
        dms_errf(err, "%s: its rotary frequencies (rope_freqs.weight) are not a Llama 3 or linear scaling; "
                      "cannot write rope_scaling", m->path);
    } else {
        *out = o;
    }
done:
    free(inv);
    free(base);
    free(chk);
    return rc;
}

/* A complete Hugging Face config.json for a model that came without one (GGUF). */
static cJSON *synth_config(const dms_model *m, dms_err *err) {
    const dms_config *c = &m->cfg;
    cJSON *rope = NULL;
    if (rope_scaling_json(m, &rope, err) != 0) return NULL;
    static const char *const arch_class[] = {"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"};
    cJSON *r = cJSON_CreateObject(), *archs = cJSON_CreateArray();
    cJSON_AddItemToArray(archs, cJSON_CreateString(arch_class[c->arch]));
    cJSON_AddItemToObject(r, "architectures", archs);
    /* Qwen2's q/k/v bias is implied by its model_type (its config has no
     * attention_bias); writing true there could make DMS code expect a
     * dms_proj_alpha bias, which NVIDIA's adapter has only with attention_bias */
    if (c->arch != DMS_ARCH_QWEN2) cJSON_AddBoolToObject(r, "attention_bias", c->qkv_bias);
    cJSON_AddNumberToObject(r, "attention_dropout", 0.0);
    if (c->bos_id >= 0) cJSON_AddNumberToObject(r, "bos_token_id", c->bos_id);
    else cJSON_AddNullToObject(r, "bos_token_id");
    if (c->eos_id >= 0) cJSON_AddNumberToObject(r, "eos_token_id", c->eos_id);
    else cJSON_AddNullToObject(r, "eos_token_id");
    cJSON_AddNumberToObject(r, "head_dim", c->head_dim);
    cJSON_AddStringToObject(r, "hidden_act", "silu");
    cJSON_AddNumberToObject(r, "hidden_size", c->hidden);
    cJSON_AddNumberToObject(r, "initializer_range", 0.02);
    cJSON_AddNumberToObject(r, "intermediate_size", c->intermediate);
    cJSON_AddNumberToObject(r, "max_position_embeddings", c->max_pos);
    if (c->arch == DMS_ARCH_LLAMA) {
        cJSON_AddBoolToObject(r, "mlp_bias", 0);
    } else {
        cJSON_AddNumberToObject(r, "max_window_layers", c->n_layers);
    }
    cJSON_AddStringToObject(r, "model_type", dms_arch_name(c->arch));
    cJSON_AddNumberToObject(r, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(r, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(r, "num_key_value_heads", c->n_kv_heads);
    if (c->arch == DMS_ARCH_LLAMA) cJSON_AddNumberToObject(r, "pretraining_tp", 1);
    cJSON_AddNumberToObject(r, "rms_norm_eps", short_float(c->rms_eps));
    if (rope) cJSON_AddItemToObject(r, "rope_scaling", rope);
    else cJSON_AddNullToObject(r, "rope_scaling");
    cJSON_AddNumberToObject(r, "rope_theta", short_float(c->rope_theta));
    if (c->arch != DMS_ARCH_LLAMA) {
        cJSON_AddNullToObject(r, "sliding_window");
        cJSON_AddBoolToObject(r, "use_sliding_window", 0);
    }
    cJSON_AddBoolToObject(r, "tie_word_embeddings", c->tie_embeddings);
    cJSON_AddStringToObject(r, "torch_dtype", "bfloat16");
    cJSON_AddBoolToObject(r, "use_cache", 1);
    cJSON_AddNumberToObject(r, "vocab_size", c->vocab);
    return r;
}

static void set_string(cJSON *root, const char *key, const char *value) {
    if (cJSON_GetObjectItemCaseSensitive(root, key))
        cJSON_ReplaceItemInObjectCaseSensitive(root, key, cJSON_CreateString(value));
    else
        cJSON_AddStringToObject(root, key, value);
}

char *dms_export_config_json(const dms_model *m, dms_export_dtype dtype, dms_err *err) {
    cJSON *root;
    if (m->source_config) {
        root = cJSON_Parse(m->source_config);
        if (!cJSON_IsObject(root)) {
            cJSON_Delete(root);
            dms_errf(err, "%s/config.json: not valid JSON", m->path);
            return NULL;
        }
    } else {
        root = synth_config(m, err);
        if (!root) return NULL;
    }
    int ok = 1;
    if (m->has_heads || m->cfg.dms.present) {
        dms_dms_config dc = m->cfg.dms;
        dc.block_size = dms_export_block_size(dc.window);
        ok = dms_dms_config_to_json(&dc, root) == 0;
        for (cJSON *e = root->child; ok && e; e = e->next) /* floats as the shortest decimal */
            if (!strncmp(e->string, "dms_", 4) && cJSON_IsNumber(e))
                cJSON_SetNumberValue(e, short_float((float)e->valuedouble));
    }
    set_string(root, "torch_dtype", torch_dtype_name(dtype));
    if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(root, "dtype"))) /* transformers 5's name for it */
        set_string(root, "dtype", torch_dtype_name(dtype));
    char *text = ok ? dms_json_print(root) : NULL;
    cJSON_Delete(root);
    if (!text) dms_errf(err, "%s: out of memory writing config.json", m->path);
    return text;
}

/* ---------------------------------------------------------------- tensors */

/* One tensor of the export and where its values come from. */
typedef struct {
    char name[192];
    dms_st_out_tensor out;
    const dms_mat *mat;   /* a matrix, or */
    const float *vec;     /* a vector of n floats */
    size_t n;
    int layer;            /* for the heads / LoRA below, -1 none */
    int lora;             /* LoRA branch merged into this matrix, -1 none */
    int neuron;           /* q_proj (or its bias): the neuron decision rows go into their rows */
} entry;

typedef struct {
    const dms_model *m;
    entry *e;
    int n, cap;
    dms_st_dtype dtype;
} plan;

static entry *plan_add(plan *p, const char *name) {
    if (p->n == p->cap) {
        int nc = p->cap ? 2 * p->cap : 64;
        entry *ne = realloc(p->e, sizeof(entry) * (size_t)nc);
        if (!ne) return NULL;
        p->e = ne;
        p->cap = nc;
    }
    entry *e = &p->e[p->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->out.name = NULL; /* set once the array stops moving */
    e->out.dtype = p->dtype;
    e->layer = -1;
    e->lora = -1;
    return e;
}

static int add_mat(plan *p, const char *name, const dms_mat *w, int layer, int lora, int neuron) {
    entry *e = plan_add(p, name);
    if (!e) return -1;
    e->mat = w;
    e->out.n_dims = 2;
    e->out.shape[0] = w->rows;
    e->out.shape[1] = w->cols;
    e->layer = layer;
    e->lora = lora;
    e->neuron = neuron;
    return 0;
}

static int add_vec(plan *p, const char *name, const float *v, int n, int layer, int neuron) {
    entry *e = plan_add(p, name);
    if (!e) return -1;
    e->vec = v;
    e->n = (size_t)n;
    e->out.n_dims = 1;
    e->out.shape[0] = n;
    e->layer = layer;
    e->neuron = neuron;
    return 0;
}

/* Every tensor, in Hugging Face's order: embeddings, each layer, final norm, LM head. */
static int build_plan(plan *p, dms_err *err) {
    const dms_model *m = p->m;
    const dms_config *c = &m->cfg;
    const int neuron = m->has_heads && !c->dms.separate_alpha, adapter = m->has_heads && c->dms.separate_alpha;
    const int lora = m->lora_rank > 0;
    int rc = add_mat(p, "model.embed_tokens.weight", &m->embed, -1, -1, 0);
    char n[192];
#define NAME(suffix) (snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix), n)
    for (int l = 0; rc == 0 && l < c->n_layers; l++) {
        const dms_layer *L = &m->layers[l];
        rc |= add_vec(p, NAME("input_layernorm.weight"), L->attn_norm, c->hidden, l, 0);
        rc |= add_mat(p, NAME("self_attn.q_proj.weight"), &L->wq, l, lora ? DMS_LORA_Q : -1, neuron);
        if (L->bq) rc |= add_vec(p, NAME("self_attn.q_proj.bias"), L->bq, L->wq.rows, l, neuron);
        rc |= add_mat(p, NAME("self_attn.k_proj.weight"), &L->wk, l, lora ? DMS_LORA_K : -1, 0);
        if (L->bk) rc |= add_vec(p, NAME("self_attn.k_proj.bias"), L->bk, L->wk.rows, l, 0);
        rc |= add_mat(p, NAME("self_attn.v_proj.weight"), &L->wv, l, lora ? DMS_LORA_V : -1, 0);
        if (L->bv) rc |= add_vec(p, NAME("self_attn.v_proj.bias"), L->bv, L->wv.rows, l, 0);
        rc |= add_mat(p, NAME("self_attn.o_proj.weight"), &L->wo, l, lora ? DMS_LORA_O : -1, 0);
        if (L->q_norm) rc |= add_vec(p, NAME("self_attn.q_norm.weight"), L->q_norm, c->head_dim, l, 0);
        if (L->k_norm) rc |= add_vec(p, NAME("self_attn.k_norm.weight"), L->k_norm, c->head_dim, l, 0);
        if (adapter) {
            rc |= add_mat(p, NAME("self_attn.dms_proj_alpha.weight"), &L->heads.w_a, l, -1, 0);
            rc |= add_vec(p, NAME("self_attn.dms_proj_alpha_norm.weight"), L->heads.w_a_norm, c->hidden, l, 0);
        }
        rc |= add_vec(p, NAME("post_attention_layernorm.weight"), L->ffn_norm, c->hidden, l, 0);
        rc |= add_mat(p, NAME("mlp.gate_proj.weight"), &L->w_gate, l, -1, 0);
        rc |= add_mat(p, NAME("mlp.up_proj.weight"), &L->w_up, l, -1, 0);
        rc |= add_mat(p, NAME("mlp.down_proj.weight"), &L->w_down, l, -1, 0);
    }
#undef NAME
    if (rc == 0) rc = add_vec(p, "model.norm.weight", m->final_norm, c->hidden, -1, 0);
    if (rc == 0 && !c->tie_embeddings) rc = add_mat(p, "lm_head.weight", &m->lm_head, -1, -1, 0);
    if (rc != 0) return dms_errf(err, "%s: out of memory", m->path);
    for (int i = 0; i < p->n; i++) p->e[i].out.name = p->e[i].name;
    return 0;
}

/* A weight in backend memory (any weight dtype), widened to fp32 on the host. */
static int read_mat(const dms_backend *be, const dms_mat *w, float *out) {
    const size_t n = (size_t)w->rows * (size_t)w->cols;
    if (w->dtype == DMS_F32) {
        dms_download_f32(be, out, w->data, n);
        return 0;
    }
    void *tmp = malloc(dms_dtype_bytes(w->dtype, n));
    if (!tmp) return -1;
    be->download(be->ctx, tmp, w->data, dms_dtype_bytes(w->dtype, n));
    dms_dtype_to_f32(w->dtype, tmp, out, n);
    free(tmp);
    return 0;
}

/* w[out, in] += scale * B A, with B A computed by the backend's matmul
 * (x = B [out, r] against the weight A^T [in, r]), added on the host in fp32. */
static int merge_lora(const dms_model *m, const dms_lora *lo, float *w, dms_err *err) {
    const dms_backend *be = m->be;
    const int r = lo->a.rows, in = lo->a.cols, out = lo->b.rows;
    float *a = malloc(sizeof(float) * (size_t)r * in), *at = malloc(sizeof(float) * (size_t)r * in);
    float *delta = malloc(sizeof(float) * (size_t)out * in);
    void *at_dev = be->alloc(be->ctx, dms_dtype_bytes(DMS_F32, (size_t)r * in));
    float *d_dev = be->alloc(be->ctx, dms_dtype_bytes(DMS_F32, (size_t)out * in));
    int rc = a && at && delta && at_dev && d_dev ? 0 : dms_errf(err, "%s: out of memory merging LoRA", m->path);
    if (rc == 0) {
        dms_download_f32(be, a, lo->a.data, (size_t)r * in);
        for (int i = 0; i < r; i++)
            for (int j = 0; j < in; j++) at[(size_t)j * r + i] = a[(size_t)i * in + j];
        dms_upload_f32(be, at_dev, at, (size_t)r * in);
        const dms_mat atm = {at_dev, DMS_F32, in, r};
        be->matmul(be->ctx, d_dev, lo->b.data, &atm, NULL, out);
        dms_download_f32(be, delta, d_dev, (size_t)out * in);
        const float s = m->lora_scale;
        for (size_t i = 0; i < (size_t)out * in; i++) w[i] += s * delta[i];
    }
    if (at_dev) be->free(be->ctx, at_dev);
    if (d_dev) be->free(be->ctx, d_dev);
    free(a);
    free(at);
    free(delta);
    return rc;
}

typedef struct {
    const plan *p;
    int first;
} shard_ctx;

static int fill_tensor(void *ctx, int index, float *out, dms_err *err) {
    const shard_ctx *s = ctx;
    const entry *e = &s->p->e[s->first + index];
    const dms_model *m = s->p->m;
    const dms_backend *be = m->be;
    const dms_config *c = &m->cfg;
    const dms_heads *h = e->layer >= 0 ? &m->layers[e->layer].heads : NULL;
    if (e->mat) {
        if (read_mat(be, e->mat, out) != 0) return dms_errf(err, "%s: out of memory reading '%s'", m->path, e->name);
        if (e->neuron) /* the trained decision rows replace their rows of q_proj */
            for (int k = 0; k < c->n_kv_heads; k++)
                dms_download_f32(be, out + (size_t)dms_neuron_row(c, k) * e->mat->cols,
                                 (const float *)h->q_rows.data + (size_t)k * c->hidden, (size_t)c->hidden);
        if (e->lora >= 0 && merge_lora(m, &m->layers[e->layer].lora[e->lora], out, err) != 0) return -1;
    } else {
        dms_download_f32(be, out, e->vec, e->n);
        if (e->neuron && h->q_rows_bias)
            for (int k = 0; k < c->n_kv_heads; k++)
                dms_download_f32(be, out + dms_neuron_row(c, k), h->q_rows_bias + k, 1);
    }
    char msg[256];
    if (be->status(be->ctx, msg, sizeof msg) != 0) return dms_errf(err, "%s: tensor '%s': %s", m->path, e->name, msg);
    return 0;
}

/* ---------------------------------------------------------------- export */

/* Refuses an --out that would lose data: an existing file, a non-empty
 * folder without --force, or (even with --force) a folder holding the run
 * or the source model. Sets *exists. */
static int check_out(const char *out, const char *run, const char *model, int force, int *exists, dms_err *err) {
    struct stat st;
    *exists = 0;
    if (stat(out, &st) != 0) return 0;
    if (!S_ISDIR(st.st_mode)) return dms_errf(err, "%s: exists and is not a folder", out);
    *exists = 1;
    const int busy = dir_nonempty(out);
    if (busy < 0) return dms_errf(err, "%s: cannot read folder: %s", out, strerror(errno));
    if (busy && !force) return dms_errf(err, "%s: exists and is not empty (use --force to replace it)", out);
    char a[PATH_MAX + 8], b[PATH_MAX + 8];
    abs_path(out, a, sizeof a);
    const char *keep[2] = {run, model};
    for (int i = 0; i < 2; i++) {
        if (!keep[i]) continue;
        abs_path(keep[i], b, sizeof b);
        if (is_same_or_above(a, b))
            return dms_errf(err, "%s: holds %s; refusing to replace it", out, i == 0 ? "the run folder" : "the source model");
    }
    return 0;
}

/* Copies the tokenizer and generation files of a Hugging Face source (and
 * the custom code an auto_map names, and licence files). */
static int copy_source_files(const dms_model *m, const char *dir, FILE *log, dms_err *err) {
    static const char *const files[] = {
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
        "chat_template.jinja", "chat_template.json", "added_tokens.json", "vocab.json", "merges.txt",
        "LICENSE", "LICENSE.txt", "LICENSE.md", "NOTICE",
    };
    char src[PATH_MAX], dst[PATH_MAX];
    int have_tok = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (snprintf(src, sizeof src, "%s/%s", m->path, files[i]) >= (int)sizeof src || !dms_is_file(src)) continue;
        if (snprintf(dst, sizeof dst, "%s/%s", dir, files[i]) >= (int)sizeof dst)
            return dms_errf(err, "%s: path too long", dir);
        if (copy_file_synced(src, dst, err) != 0) return -1;
        have_tok |= i == 0;
    }
    if (strstr(m->source_config, "\"auto_map\"")) { /* custom code named by auto_map: every *.py beside it */
        DIR *d = opendir(m->path);
        for (struct dirent *e; d && (e = readdir(d));) {
            size_t len = strlen(e->d_name);
            if (len < 4 || strcmp(e->d_name + len - 3, ".py")) continue;
            if (snprintf(src, sizeof src, "%s/%s", m->path, e->d_name) >= (int)sizeof src ||
                snprintf(dst, sizeof dst, "%s/%s", dir, e->d_name) >= (int)sizeof dst)
                continue;
            if (dms_is_file(src) && copy_file_synced(src, dst, err) != 0) {
                closedir(d);
                return -1;
            }
        }
        if (d) closedir(d);
    }
    if (!have_tok && log) fprintf(log, "[dms export] note: %s has no tokenizer.json; the export has none either\n", m->path);
    return 0;
}

/* GGUF source: tokenizer files from its metadata, and a generation_config.json. */
static int write_gguf_side_files(const dms_model *m, const char *dir, dms_err *err) {
    dms_gguf g;
    if (dms_gguf_open(&g, m->path, err) != 0) return -1;
    int rc = 0;
    if (dms_gguf_find_kv(&g, "tokenizer.ggml.tokens")) rc = dms_tokenizer_export_gguf(&g, dir, m->cfg.max_pos, err);
    dms_gguf_close(&g);
    if (rc != 0) return -1;
    char text[256];
    int n = snprintf(text, sizeof text, "{\n  \"_from_model_config\": true");
    if (m->cfg.bos_id >= 0) n += snprintf(text + n, sizeof text - (size_t)n, ",\n  \"bos_token_id\": %d", m->cfg.bos_id);
    if (m->cfg.eos_id >= 0) n += snprintf(text + n, sizeof text - (size_t)n, ",\n  \"eos_token_id\": %d", m->cfg.eos_id);
    snprintf(text + n, sizeof text - (size_t)n, "\n}\n");
    return write_text(dir, "generation_config.json", text, err);
}

static int write_index(const plan *p, const int *shard_of, int n_shards, uint64_t total, const char *dir,
                       dms_err *err) {
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_CreateObject(), *map = cJSON_CreateObject();
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)total);
    cJSON_AddItemToObject(meta, "total_size", cJSON_CreateRaw(buf));
    cJSON_AddItemToObject(root, "metadata", meta);
    /* weight_map sorted by name, as Hugging Face writes it */
    int *order = malloc(sizeof(int) * (size_t)p->n);
    if (!order) {
        cJSON_Delete(root);
        cJSON_Delete(map);
        return dms_errf(err, "%s: out of memory", dir);
    }
    for (int i = 0; i < p->n; i++) order[i] = i;
    for (int i = 1; i < p->n; i++) { /* insertion sort: a few thousand names at most */
        int k = order[i], j = i - 1;
        while (j >= 0 && strcmp(p->e[order[j]].name, p->e[k].name) > 0) {
            order[j + 1] = order[j];
            j--;
        }
        order[j + 1] = k;
    }
    for (int i = 0; i < p->n; i++) {
        char file[64];
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", shard_of[order[i]] + 1, n_shards);
        cJSON_AddStringToObject(map, p->e[order[i]].name, file);
    }
    free(order);
    cJSON_AddItemToObject(root, "weight_map", map);
    char *text = dms_json_print(root);
    cJSON_Delete(root);
    if (!text) return dms_errf(err, "%s: out of memory", dir);
    int rc = write_text(dir, "model.safetensors.index.json", text, err);
    free(text);
    return rc;
}

static int write_folder(const dms_model *m, const dms_export_opts *o, const char *dir, dms_export_result *res,
                        dms_err *err) {
    plan p = {.m = m, .dtype = st_dtype(o->dtype)};
    int *shard_of = NULL;
    dms_st_out_tensor *outs = NULL;
    int rc = build_plan(&p, err);
    const double shard_bytes = (o->shard_mb > 0 ? o->shard_mb : 5000) * 1e6;
    if (rc == 0) {
        shard_of = malloc(sizeof(int) * (size_t)p.n);
        outs = malloc(sizeof(dms_st_out_tensor) * (size_t)p.n);
        if (!shard_of || !outs) rc = dms_errf(err, "%s: out of memory", m->path);
    }
    /* shards as Hugging Face cuts them: a new one when the next tensor would
     * pass the limit (a tensor larger than the limit gets a shard of its own) */
    int n_shards = 0;
    uint64_t total = 0, cur = 0;
    for (int i = 0; rc == 0 && i < p.n; i++) {
        const uint64_t b = dms_st_out_nbytes(&p.e[i].out);
        if (n_shards == 0 || (cur > 0 && (double)(cur + b) > shard_bytes)) {
            n_shards++;
            cur = 0;
        }
        cur += b;
        total += b;
        shard_of[i] = n_shards - 1;
        outs[i] = p.e[i].out;
    }
    for (int s = 0, first = 0; rc == 0 && s < n_shards; s++) {
        int last = first;
        uint64_t bytes = 0;
        while (last < p.n && shard_of[last] == s) bytes += dms_st_out_nbytes(&outs[last++]);
        char file[64], path[PATH_MAX];
        if (n_shards == 1) snprintf(file, sizeof file, "model.safetensors");
        else snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        if (snprintf(path, sizeof path, "%s/%s", dir, file) >= (int)sizeof path) {
            rc = dms_errf(err, "%s: path too long", dir);
            break;
        }
        shard_ctx sc = {&p, first};
        rc = dms_st_write(path, outs + first, last - first, fill_tensor, &sc, err);
        if (rc == 0 && o->log)
            fprintf(o->log, "[dms export] %s (%d/%d): %d tensors, %.1f MB\n", file, s + 1, n_shards, last - first,
                    (double)bytes / 1e6);
        if (rc == 0) dms_fault_point("export_shard", s + 1); /* fault drills only (core/fault_point.h) */
        first = last;
    }
    if (rc == 0 && n_shards > 1) rc = write_index(&p, shard_of, n_shards, total, dir, err);
    if (rc == 0) {
        char *cfg = dms_export_config_json(m, o->dtype, err);
        rc = cfg ? write_text(dir, "config.json", cfg, err) : -1;
        free(cfg);
    }
    if (rc == 0) rc = m->from_gguf ? write_gguf_side_files(m, dir, err) : copy_source_files(m, dir, o->log, err);
    if (rc == 0) rc = dms_fsync_dir(dir, err);
    if (rc == 0 && res) {
        res->n_tensors = p.n;
        res->n_shards = n_shards;
        res->bytes = total;
    }
    free(shard_of);
    free(outs);
    free(p.e);
    return rc;
}

static void strip_slashes(const char *in, char *out, size_t cap) {
    snprintf(out, cap, "%s", in);
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/') out[--n] = '\0';
}

/* Names the DIR.tmp-<pid> folders that interrupted exports (killed: their
 * own cleanup never ran) left beside DIR. They are left alone: the pid may
 * be an export still running on another host of a shared filesystem. */
static void note_stale_tmp(const char *out, FILE *log) {
    if (!log) return;
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", out);
    char *slash = strrchr(parent, '/');
    const char *base = slash ? slash + 1 : out;
    if (slash) *slash = '\0';
    DIR *d = opendir(slash ? (parent[0] ? parent : "/") : ".");
    if (!d) return;
    const size_t bl = strlen(base);
    for (struct dirent *e; (e = readdir(d));) {
        const char *n = e->d_name;
        if (strncmp(n, base, bl) != 0 || strncmp(n + bl, ".tmp-", 5) != 0) continue;
        char *end;
        const long pid = strtol(n + bl + 5, &end, 10);
        if (end == n + bl + 5 || *end || pid <= 0 || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* still running here */
        fprintf(log, "[dms export] note: %s%s%s was left by an interrupted export (pid %ld); remove it\n",
                slash ? parent : "", slash ? "/" : "", n, pid);
    }
    closedir(d);
}

static int export_to(const dms_model *m, const dms_export_opts *o, const char *model_path, dms_export_result *res,
                     dms_err *err) {
    if (!o->out || !*o->out) return dms_errf(err, "no output folder given (--out DIR)");
    char out[PATH_MAX], tmp[PATH_MAX + 32], parent[PATH_MAX];
    strip_slashes(o->out, out, sizeof out);
    int exists;
    if (check_out(out, o->run, model_path, o->force, &exists, err) != 0) return -1;
    snprintf(parent, sizeof parent, "%s", out);
    char *slash = strrchr(parent, '/');
    if (slash) {
        if (slash == parent) slash[1] = '\0';
        else *slash = '\0';
    } else {
        snprintf(parent, sizeof parent, ".");
    }
    if (dms_mkdir_p(parent, err) != 0) return -1;
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", out, (long)getpid());
    if (remove_tree(tmp) != 0) return dms_errf(err, "%s: cannot remove a stale temporary folder: %s", tmp, strerror(errno));
    if (mkdir(tmp, 0755) != 0) return dms_errf(err, "%s: cannot create: %s", tmp, strerror(errno));
    int rc = write_folder(m, o, tmp, res, err);
    if (rc == 0) { /* publish: swap in atomically where the kernel can, else move the old one aside */
        if (!exists) {
            if (rename(tmp, out) != 0) rc = dms_errf(err, "%s: cannot rename to %s: %s", tmp, out, strerror(errno));
        } else if (renameat2(AT_FDCWD, tmp, AT_FDCWD, out, RENAME_EXCHANGE) == 0) {
            remove_tree(tmp); /* now the old folder */
        } else {
            char old[PATH_MAX + 32];
            snprintf(old, sizeof old, "%s.old-%ld", out, (long)getpid());
            if (rename(out, old) != 0) {
                rc = dms_errf(err, "%s: cannot move aside: %s", out, strerror(errno));
            } else if (rename(tmp, out) != 0) {
                rc = dms_errf(err, "%s: cannot rename to %s: %s", tmp, out, strerror(errno));
                rename(old, out);
            } else {
                remove_tree(old);
            }
        }
    }
    if (rc != 0) remove_tree(tmp);
    else dms_fsync_dir(parent, NULL);
    if (rc == 0) note_stale_tmp(out, o->log);
    return rc;
}

int dms_export_model(const dms_model *m, const dms_export_opts *o, dms_export_result *res, dms_err *err) {
    if (res) {
        res->variant = !m->has_heads ? "none" : dms_heads_kind_name(m->cfg.dms.separate_alpha ? DMS_HEADS_ADAPTER
                                                                                              : DMS_HEADS_NEURON);
        res->dtype = dms_export_dtype_name(o->dtype);
    }
    return export_to(m, o, m->path, res, err);
}

int dms_export_run(const dms_export_opts *o, dms_export_result *res, dms_err *err) {
    dms_export_result local;
    if (!res) res = &local;
    memset(res, 0, sizeof *res);
    if (!o->out || !*o->out) return dms_errf(err, "no output folder given (--out DIR)");
    int exists;
    char out[PATH_MAX];
    strip_slashes(o->out, out, sizeof out);
    /* cheap refusals before the model is loaded */
    if (check_out(out, o->run, o->model, o->force, &exists, err) != 0) return -1;
    dms_model m;
    if (dms_export_load_run(&m, o, res, err) != 0) return -1;
    int rc = dms_export_model(&m, o, res, err);
    if (rc == 0 && o->log)
        fprintf(o->log, "[dms export] %s: %d tensors, %.1f MB in %d file(s); variant %s, dtype %s; from %s (step %lld)\n",
                out, res->n_tensors, (double)res->bytes / 1e6, res->n_shards, res->variant, res->dtype, res->ckpt,
                (long long)res->step);
    dms_model_free(&m);
    return rc;
}
