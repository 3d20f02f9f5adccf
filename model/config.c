/* config.c - read model architecture parameters from config.json (cJSON)
 * or GGUF metadata into dms_config, and derive the rotary frequencies
 * (including Llama 3 frequency scaling) exactly as Hugging Face does. */
#include "model/config.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mapped_file.h"

const char *dms_arch_name(dms_arch a) {
    switch (a) {
    case DMS_ARCH_LLAMA: return "llama";
    case DMS_ARCH_QWEN2: return "qwen2";
    case DMS_ARCH_QWEN3: return "qwen3";
    }
    return "?";
}

const char *dms_heads_kind_name(dms_heads_kind k) { return k == DMS_HEADS_ADAPTER ? "adapter" : "neuron"; }

void dms_dms_config_defaults(dms_dms_config *d) {
    memset(d, 0, sizeof *d);
    d->alpha_scale = 100.0f;
    d->alpha_offset = 5.0f;
    d->window = 512;
    d->separate_alpha = 0;
    d->alpha_per_layer = 0;
    d->tau = 0.1f;
    d->cr = 8.0f;
    d->disable_eviction = 0;
    d->block_size = 256;
}

/* One dms_* field: its JSON kind and where it goes. */
typedef enum { F_NUM, F_INT, F_BOOL, F_PER } field_kind;
typedef struct {
    const char *name;
    field_kind kind;
    size_t off;
    double min; /* numbers: exclusive lower bound */
} dms_field;
#define DMS_FIELD(n, k, m, lo) {n, k, offsetof(dms_dms_config, m), lo}
static const dms_field dms_fields[] = {
    DMS_FIELD("dms_alpha_scale", F_NUM, alpha_scale, 0),
    DMS_FIELD("dms_initial_alpha_offset", F_NUM, alpha_offset, -1e30),
    DMS_FIELD("dms_window_size", F_INT, window, 0),
    DMS_FIELD("dms_separate_alpha", F_BOOL, separate_alpha, 0),
    DMS_FIELD("dms_alpha_per", F_PER, alpha_per_layer, 0),
    DMS_FIELD("dms_tau", F_NUM, tau, 0),
    DMS_FIELD("dms_cr", F_NUM, cr, 0),
    DMS_FIELD("dms_disable_eviction", F_BOOL, disable_eviction, 0),
    DMS_FIELD("dms_paged_attention_block_size", F_INT, block_size, 0),
    DMS_FIELD("dms_sink_tokens", F_INT, sink_tokens, -1),
};
#define N_DMS_FIELDS (sizeof dms_fields / sizeof dms_fields[0])

int dms_dms_config_from_json(dms_dms_config *d, const cJSON *root, const char *path, dms_err *err) {
    dms_dms_config_defaults(d);
    for (size_t i = 0; i < N_DMS_FIELDS; i++) {
        const dms_field *f = &dms_fields[i];
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, f->name);
        if (!v || cJSON_IsNull(v)) continue;
        d->present = 1;
        char *dst = (char *)d + f->off;
        switch (f->kind) {
        case F_NUM:
        case F_INT:
            if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
                return dms_errf(err, "%s: '%s' must be a number", path, f->name);
            if (!(v->valuedouble > f->min))
                return dms_errf(err, "%s: '%s' must be greater than %g (got %g)", path, f->name, f->min,
                                v->valuedouble);
            if (f->kind == F_INT) {
                if (v->valuedouble != floor(v->valuedouble) || v->valuedouble > 1 << 30)
                    return dms_errf(err, "%s: '%s' must be an integer (got %g)", path, f->name, v->valuedouble);
                *(int *)dst = (int)v->valuedouble;
            } else {
                /* as stored (a float): still in range, not rounded to 0 or inf */
                const float fv = fabs(v->valuedouble) <= FLT_MAX ? (float)v->valuedouble : INFINITY;
                if (!isfinite(fv) || !(fv > f->min))
                    return dms_errf(err, "%s: '%s' is out of range for a float32 (got %g)", path, f->name,
                                    v->valuedouble);
                *(float *)dst = fv;
            }
            break;
        case F_BOOL:
            if (!cJSON_IsBool(v)) return dms_errf(err, "%s: '%s' must be true or false", path, f->name);
            *(int *)dst = cJSON_IsTrue(v);
            break;
        case F_PER:
            if (!cJSON_IsString(v) || (strcmp(v->valuestring, "head") && strcmp(v->valuestring, "layer")))
                return dms_errf(err, "%s: '%s' must be \"head\" or \"layer\"", path, f->name);
            *(int *)dst = !strcmp(v->valuestring, "layer");
            break;
        }
    }
    if (d->present && d->window <= d->block_size) /* NVIDIA's rule: the paged cache needs it */
        return dms_errf(err, "%s: dms_window_size %d must be larger than dms_paged_attention_block_size %d", path,
                        d->window, d->block_size);
    return 0;
}

int dms_dms_config_to_json(const dms_dms_config *d, cJSON *root) {
    for (size_t i = 0; i < N_DMS_FIELDS; i++) {
        const dms_field *f = &dms_fields[i];
        const char *src = (const char *)d + f->off;
        cJSON *v = NULL;
        switch (f->kind) {
        case F_NUM: v = cJSON_CreateNumber(*(const float *)src); break;
        case F_INT: v = cJSON_CreateNumber(*(const int *)src); break;
        case F_BOOL: v = cJSON_CreateBool(*(const int *)src); break;
        case F_PER: v = cJSON_CreateString(*(const int *)src ? "layer" : "head"); break;
        }
        if (!v) return -1;
        cJSON_DeleteItemFromObjectCaseSensitive(root, f->name);
        if (!cJSON_AddItemToObject(root, f->name, v)) {
            cJSON_Delete(v);
            return -1;
        }
    }
    return 0;
}

static int arch_from_name(const char *s, dms_arch *a) {
    if (!s) return -1;
    if (!strcmp(s, "llama") || !strcmp(s, "LlamaForCausalLM")) *a = DMS_ARCH_LLAMA;
    else if (!strcmp(s, "qwen2") || !strcmp(s, "Qwen2ForCausalLM")) *a = DMS_ARCH_QWEN2;
    else if (!strcmp(s, "qwen3") || !strcmp(s, "Qwen3ForCausalLM")) *a = DMS_ARCH_QWEN3;
    else return -1;
    return 0;
}

static void set_arch_defaults(dms_config *c) {
    c->qkv_bias = c->arch == DMS_ARCH_QWEN2;
    c->qk_norm = c->arch == DMS_ARCH_QWEN3;
}

static double num(const cJSON *o, const char *key, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

/* An optional integer field; cJSON's valueint is already clamped to the int
 * range, where a cast of valuedouble (1e300) would be undefined. */
static int opt_int(const cJSON *o, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valueint : dflt;
}

static int req_int(const cJSON *o, const char *key, int *out, const char *path, dms_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return dms_errf(err, "%s: missing or non-numeric '%s'", path, key);
    *out = v->valueint;
    return 0;
}

int dms_config_from_hf(dms_config *c, const char *path, char **raw_json, dms_err *err) {
    memset(c, 0, sizeof *c);
    if (raw_json) *raw_json = NULL;
    char *text = dms_read_text_file(path, NULL, err);
    if (!text) return -1;
    cJSON *root = cJSON_Parse(text);
    if (raw_json && cJSON_IsObject(root)) *raw_json = text;
    else free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return dms_errf(err, "%s: not valid JSON", path);
    }
    int rc = 0;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const char *name = cJSON_IsString(mt) ? mt->valuestring : NULL;
    if (!name && cJSON_IsArray(archs) && cJSON_IsString(archs->child)) name = archs->child->valuestring;
    if (arch_from_name(name, &c->arch) != 0) {
        rc = dms_errf(err, "%s: unknown architecture '%s' (supported: llama, qwen2, qwen3)", path,
                      name ? name : "(none)");
        goto done;
    }
    set_arch_defaults(c);
    if (req_int(root, "num_hidden_layers", &c->n_layers, path, err) ||
        req_int(root, "hidden_size", &c->hidden, path, err) ||
        req_int(root, "intermediate_size", &c->intermediate, path, err) ||
        req_int(root, "num_attention_heads", &c->n_heads, path, err) ||
        req_int(root, "vocab_size", &c->vocab, path, err)) {
        rc = -1;
        goto done;
    }
    c->n_kv_heads = opt_int(root, "num_key_value_heads", c->n_heads);
    const cJSON *hd = cJSON_GetObjectItemCaseSensitive(root, "head_dim");
    c->head_dim = cJSON_IsNumber(hd) ? hd->valueint : (c->n_heads ? c->hidden / c->n_heads : 0);
    c->max_pos = opt_int(root, "max_position_embeddings", 4096);
    c->rms_eps = (float)num(root, "rms_norm_eps", 1e-6);
    c->bos_id = opt_int(root, "bos_token_id", -1);
    c->eos_id = opt_int(root, "eos_token_id", -1);
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    if (cJSON_IsArray(eos) && cJSON_IsNumber(eos->child)) /* Llama 3.x instruct: several; the first ends text */
        c->eos_id = eos->child->valueint;
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
    c->tie_embeddings = cJSON_IsBool(tie) ? cJSON_IsTrue(tie) : 0;
    const cJSON *bias = cJSON_GetObjectItemCaseSensitive(root, "attention_bias");
    if (cJSON_IsBool(bias)) c->qkv_bias = c->qkv_bias || cJSON_IsTrue(bias);
    /* Rope: classic layout (rope_theta + rope_scaling) or the newer
     * rope_parameters object that holds both. */
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    c->rope_theta = (float)num(root, "rope_theta", cJSON_IsObject(rp) ? num(rp, "rope_theta", 10000.0) : 10000.0);
    if (!cJSON_IsObject(rs) && cJSON_IsObject(rp)) rs = rp;
    if (cJSON_IsObject(rs)) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
        if (!cJSON_IsString(ty)) ty = cJSON_GetObjectItemCaseSensitive(rs, "type");
        const char *t = cJSON_IsString(ty) ? ty->valuestring : "default";
        c->rope_factor = (float)num(rs, "factor", 1.0);
        if (!strcmp(t, "llama3")) {
            c->rope_kind = DMS_ROPE_LLAMA3;
            c->rope_low_freq = (float)num(rs, "low_freq_factor", 1.0);
            c->rope_high_freq = (float)num(rs, "high_freq_factor", 4.0);
            c->rope_orig_max_pos = opt_int(rs, "original_max_position_embeddings", 8192);
        } else if (!strcmp(t, "linear")) {
            c->rope_kind = DMS_ROPE_LINEAR;
        } else if (strcmp(t, "default") != 0) {
            rc = dms_errf(err, "%s: rope scaling type '%s' not supported (default, linear, llama3)", path, t);
            goto done;
        }
    }
    if (dms_dms_config_from_json(&c->dms, root, path, err) != 0) {
        rc = -1;
        goto done;
    }
    rc = dms_config_validate(c, path, err);
done:
    cJSON_Delete(root);
    if (rc != 0 && raw_json) {
        free(*raw_json);
        *raw_json = NULL;
    }
    return rc;
}

int dms_config_from_gguf(dms_config *c, const dms_gguf *g, dms_err *err) {
    memset(c, 0, sizeof *c);
    dms_dms_config_defaults(&c->dms);
    const char *path = g->file.path;
    char *arch = dms_gguf_get_str(g, "general.architecture");
    if (arch_from_name(arch, &c->arch) != 0) {
        dms_errf(err, "%s: unknown architecture '%s' (supported: llama, qwen2, qwen3)", path,
                 arch ? arch : "(none)");
        free(arch);
        return -1;
    }
    set_arch_defaults(c);
    char key[128];
    uint64_t u;
    double f;
#define GG_REQ(field, suffix)                                                                \
    do {                                                                                     \
        snprintf(key, sizeof key, "%s." suffix, arch);                                       \
        if (dms_gguf_get_u64(g, key, &u) != 0) {                                             \
            free(arch);                                                                      \
            return dms_errf(err, "%s: missing metadata '%s'", path, key);                    \
        }                                                                                    \
        c->field = u > DMS_CONFIG_MAX_DIM ? INT_MAX : (int)u; /* refused by validate */     \
    } while (0)
    GG_REQ(n_layers, "block_count");
    GG_REQ(hidden, "embedding_length");
    GG_REQ(intermediate, "feed_forward_length");
    GG_REQ(n_heads, "attention.head_count");
    c->n_kv_heads = c->n_heads;
    snprintf(key, sizeof key, "%s.attention.head_count_kv", arch);
    if (dms_gguf_get_u64(g, key, &u) == 0) c->n_kv_heads = u > DMS_CONFIG_MAX_DIM ? INT_MAX : (int)u;
    c->head_dim = c->n_heads ? c->hidden / c->n_heads : 0;
    snprintf(key, sizeof key, "%s.attention.key_length", arch);
    if (dms_gguf_get_u64(g, key, &u) == 0) c->head_dim = u > DMS_CONFIG_MAX_DIM ? INT_MAX : (int)u;
    snprintf(key, sizeof key, "%s.context_length", arch);
    c->max_pos = dms_gguf_get_u64(g, key, &u) == 0 ? (u > INT_MAX ? INT_MAX : (int)u) : 4096;
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
    c->rms_eps = dms_gguf_get_f64(g, key, &f) == 0 ? (float)f : 1e-6f;
    snprintf(key, sizeof key, "%s.rope.freq_base", arch);
    c->rope_theta = dms_gguf_get_f64(g, key, &f) == 0 ? (float)f : 10000.0f;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    char *st = dms_gguf_get_str(g, key);
    if (st && !strcmp(st, "linear")) {
        c->rope_kind = DMS_ROPE_LINEAR;
        snprintf(key, sizeof key, "%s.rope.scaling.factor", arch);
        c->rope_factor = dms_gguf_get_f64(g, key, &f) == 0 ? (float)f : 1.0f;
    }
    free(st);
    /* Llama 3.1+ GGUFs carry pre-scaled frequencies in rope_freqs.weight;
     * the loader applies those directly (see model.c). */
    const dms_gguf_kv *toks = dms_gguf_find_kv(g, "tokenizer.ggml.tokens");
    snprintf(key, sizeof key, "%s.vocab_size", arch);
    if (dms_gguf_get_u64(g, key, &u) == 0) c->vocab = u > DMS_CONFIG_MAX_VOCAB ? INT_MAX : (int)u;
    else if (toks) c->vocab = toks->arr_len > DMS_CONFIG_MAX_VOCAB ? INT_MAX : (int)toks->arr_len;
    const dms_gguf_tensor *out = dms_gguf_find_tensor(g, "output.weight");
    c->tie_embeddings = out == NULL;
    c->bos_id = dms_gguf_get_u64(g, "tokenizer.ggml.bos_token_id", &u) == 0 && u <= INT_MAX ? (int)u : -1;
    c->eos_id = dms_gguf_get_u64(g, "tokenizer.ggml.eos_token_id", &u) == 0 && u <= INT_MAX ? (int)u : -1;
    free(arch);
#undef GG_REQ
    return dms_config_validate(c, path, err);
}

int dms_config_validate(const dms_config *c, const char *what, dms_err *err) {
    if (c->n_layers <= 0 || c->hidden <= 0 || c->intermediate <= 0 || c->n_heads <= 0 ||
        c->n_kv_heads <= 0 || c->head_dim <= 0 || c->vocab <= 0)
        return dms_errf(err, "%s: non-positive model dimension (layers %d, hidden %d, heads %d/%d, head_dim %d, vocab %d)",
                        what, c->n_layers, c->hidden, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab);
    if (c->n_layers > DMS_CONFIG_MAX_DIM || c->hidden > DMS_CONFIG_MAX_DIM || c->intermediate > DMS_CONFIG_MAX_DIM ||
        c->n_heads > DMS_CONFIG_MAX_DIM || c->head_dim > DMS_CONFIG_MAX_DIM || c->vocab > DMS_CONFIG_MAX_VOCAB ||
        (long long)c->n_heads * c->head_dim > DMS_CONFIG_MAX_DIM)
        return dms_errf(err, "%s: model dimension beyond the limits (layers %d, hidden %d, MLP %d, heads %d x head_dim %d, "
                        "vocab %d; each at most %d, vocab %d)", what, c->n_layers, c->hidden, c->intermediate, c->n_heads,
                        c->head_dim, c->vocab, DMS_CONFIG_MAX_DIM, DMS_CONFIG_MAX_VOCAB);
    if (c->n_heads % c->n_kv_heads != 0)
        return dms_errf(err, "%s: %d attention heads are not a multiple of %d KV heads", what, c->n_heads,
                        c->n_kv_heads);
    if (c->head_dim % 2 != 0) return dms_errf(err, "%s: head_dim %d is odd", what, c->head_dim);
    if (!(c->rms_eps > 0) || !(c->rope_theta > 0))
        return dms_errf(err, "%s: rms_norm_eps and rope_theta must be positive", what);
    return 0;
}

void dms_config_rope_inv_freq(const dms_config *c, float *inv_freq) {
    const int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        double f = 1.0 / pow((double)c->rope_theta, (2.0 * i) / c->head_dim);
        if (c->rope_kind == DMS_ROPE_LINEAR && c->rope_factor > 0) {
            f /= c->rope_factor;
        } else if (c->rope_kind == DMS_ROPE_LLAMA3) {
            /* Llama 3: long wavelengths are slowed by `factor`, short ones
             * kept, and the band in between interpolated smoothly. */
            const double low_wl = c->rope_orig_max_pos / c->rope_low_freq;
            const double high_wl = c->rope_orig_max_pos / c->rope_high_freq;
            const double wl = 2.0 * M_PI / f;
            if (wl > low_wl) {
                f /= c->rope_factor;
            } else if (wl >= high_wl) {
                const double smooth = (c->rope_orig_max_pos / wl - c->rope_low_freq) /
                                      (c->rope_high_freq - c->rope_low_freq);
                f = (1.0 - smooth) * f / c->rope_factor + smooth * f;
            }
        }
        inv_freq[i] = (float)f;
    }
}
