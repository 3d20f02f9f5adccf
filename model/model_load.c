/* model_load.c - build a dms_model from a Hugging Face folder (config.json +
 * safetensors + tokenizer.json) or a GGUF file: resolve tensor names, check
 * every shape against the config, convert to fp32 (or, for inference, keep
 * a matrix's file dtype where the backend reads it) and place the weights in
 * the backend's memory. GGUF stores Llama's q/k rows in an interleaved order
 * (llama.cpp's rope pairing); they are put back into Hugging Face order here
 * so that the forward pass is one code path. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/half.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model/safetensors.h"

typedef struct {
    const char *path;
    int is_gguf;
    int keep; /* DMS_LOAD_KEEP_DTYPE */
    dms_safetensors st;
    dms_gguf gg;
    const dms_config *cfg;
    dms_model *m;
} weight_source;

/* Hugging Face tensor name -> GGUF name; returns 0 on success. */
static int hf_to_gguf_name(const char *hf, char *out, size_t cap) {
    static const struct { const char *hf, *gg; } top[] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
    };
    static const struct { const char *hf, *gg; } per_layer[] = {
        {"input_layernorm.weight", "attn_norm.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"}, {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.weight", "attn_k.weight"}, {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.weight", "attn_v.weight"}, {"self_attn.v_proj.bias", "attn_v.bias"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"self_attn.q_norm.weight", "attn_q_norm.weight"},
        {"self_attn.k_norm.weight", "attn_k_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
    };
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        if (!strcmp(hf, top[i].hf)) return snprintf(out, cap, "%s", top[i].gg) >= (int)cap;
    int layer, consumed = 0;
    if (sscanf(hf, "model.layers.%d.%n", &layer, &consumed) == 1 && consumed > 0) {
        for (size_t i = 0; i < sizeof per_layer / sizeof per_layer[0]; i++)
            if (!strcmp(hf + consumed, per_layer[i].hf))
                return snprintf(out, cap, "blk.%d.%s", layer, per_layer[i].gg) >= (int)cap;
    }
    return -1;
}

static void note_type(dms_model *m, const char *type) {
    if (strstr(m->weight_types, type)) return;
    size_t len = strlen(m->weight_types);
    snprintf(m->weight_types + len, sizeof m->weight_types - len, "%s%s", len ? ", " : "", type);
}

/* Inverse of llama.cpp's q/k permutation: GGUF row h*hd + 2i + j holds
 * Hugging Face row h*hd + j*hd/2 + i. */
static int hf_row_of(int r, int head_dim) {
    const int h = r / head_dim, within = r % head_dim;
    return h * head_dim + (within % 2) * (head_dim / 2) + within / 2;
}

static int unpermute_rows(float *w, int rows, int cols, int head_dim) {
    float *tmp = malloc(sizeof(float) * (size_t)rows * cols);
    if (!tmp) return -1;
    memcpy(tmp, w, sizeof(float) * (size_t)rows * cols);
    for (int r = 0; r < rows; r++)
        memcpy(w + (size_t)hf_row_of(r, head_dim) * cols, tmp + (size_t)r * cols, sizeof(float) * cols);
    free(tmp);
    return 0;
}

/* The weight dtype a GGUF or safetensors tensor keeps as it is; -1: none. */
static int kept_dtype_gguf(dms_ggml_type t) {
    switch (t) {
    case GGML_F16: return DMS_F16;
    case GGML_BF16: return DMS_BF16;
    case GGML_Q4_0: return DMS_Q4_0;
    case GGML_Q4_1: return DMS_Q4_1;
    case GGML_Q8_0: return DMS_Q8_0;
    case GGML_Q4_K: return DMS_Q4_K;
    case GGML_Q6_K: return DMS_Q6_K;
    default: return -1;
    }
}
static int kept_dtype_st(dms_st_dtype t) { return t == DMS_ST_F16 ? DMS_F16 : t == DMS_ST_BF16 ? DMS_BF16 : -1; }

/* With DMS_LOAD_KEEP_DTYPE: places matrix `name` [rows, cols] in backend
 * memory in its file dtype when the backend reads that dtype (GGUF q/k rows
 * un-permuted whole, a row being whole blocks). Returns 1 if it did, 0 if
 * the matrix is to be converted instead (also when it is missing or
 * misshapen: read_tensor then says so), -1 on an error. */
static int load_mat_kept(weight_source *ws, const char *name, int rows, int cols, dms_mat *dst, dms_err *err) {
    const dms_backend *be = ws->m->be;
    const uint8_t *src = NULL;
    size_t nbytes = 0;
    int dt = -1, permute = 0;
    const char *type_name = NULL;
    if (!ws->keep || !be->supports_dtype) return 0;
    if (ws->is_gguf) {
        char gname[128];
        if (hf_to_gguf_name(name, gname, sizeof gname) != 0) return 0;
        const dms_gguf_tensor *t = dms_gguf_find_tensor(&ws->gg, gname);
        if (!t || t->n_dims != 2 || t->ne[0] != (uint64_t)cols || t->ne[1] != (uint64_t)rows) return 0;
        dt = kept_dtype_gguf(t->type);
        src = t->data;
        nbytes = t->nbytes;
        type_name = dms_ggml_type_name(t->type);
        permute = ws->cfg->arch == DMS_ARCH_LLAMA &&
                  (strstr(gname, ".attn_q.weight") != NULL || strstr(gname, ".attn_k.weight") != NULL);
    } else {
        const dms_st_tensor *t = dms_st_find(&ws->st, name);
        if (!t || t->n_dims != 2 || t->shape[0] != rows || t->shape[1] != cols) return 0;
        dt = kept_dtype_st(t->dtype);
        src = t->data;
        nbytes = t->nbytes;
        type_name = dms_st_dtype_name(t->dtype);
    }
    if (dt < 0 || !be->supports_dtype(be->ctx, (dms_dtype)dt) || cols % dms_dtype_block((dms_dtype)dt) != 0 || !src ||
        nbytes != dms_dtype_bytes((dms_dtype)dt, (size_t)rows * cols))
        return 0;
    const size_t rb = dms_dtype_bytes((dms_dtype)dt, (size_t)cols);
    void *dev = be->alloc(be->ctx, nbytes);
    if (!dev) return dms_errf(err, "%s: backend out of memory for '%s'", ws->path, name);
    if (permute) {
        uint8_t *host = malloc(nbytes);
        if (!host) {
            be->free(be->ctx, dev);
            return dms_errf(err, "%s: out of memory for '%s'", ws->path, name);
        }
        for (int r = 0; r < rows; r++)
            memcpy(host + (size_t)hf_row_of(r, ws->cfg->head_dim) * rb, src + (size_t)r * rb, rb);
        be->upload(be->ctx, dev, host, nbytes);
        free(host);
    } else {
        be->upload(be->ctx, dev, src, nbytes);
    }
    *dst = (dms_mat){dev, (dms_dtype)dt, rows, cols};
    note_type(ws->m, type_name);
    ws->m->n_params += (size_t)rows * cols;
    return 1;
}

/* Reads tensor `name` as fp32 into a fresh host buffer; rows/cols are the
 * expected Hugging Face shape (cols = 0 for a vector). optional: a missing
 * tensor yields *out = NULL and success. */
static int read_tensor(weight_source *ws, const char *name, int rows, int cols, int optional,
                       float **out, dms_err *err) {
    *out = NULL;
    const size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    if (!ws->is_gguf) {
        const dms_st_tensor *t = dms_st_find(&ws->st, name);
        if (!t) return optional ? 0 : dms_errf(err, "%s: missing tensor '%s'", ws->path, name);
        int ok = cols ? (t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols)
                      : (t->n_dims == 1 && t->shape[0] == rows);
        if (!ok) {
            char got[128] = "";
            for (int d = 0; d < t->n_dims; d++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "x" : "",
                         (long long)t->shape[d]);
            return dms_errf(err, "%s: tensor '%s' has shape [%s], config expects [%d%s%.0d]",
                            ws->st.files[t->file].path, name, got, rows, cols ? "x" : "", cols);
        }
        float *buf = malloc(sizeof(float) * n);
        if (!buf) return dms_errf(err, "%s: out of memory for '%s'", ws->path, name);
        if (dms_st_to_f32(&ws->st, t, buf, err) != 0) {
            free(buf);
            return -1;
        }
        note_type(ws->m, dms_st_dtype_name(t->dtype));
        *out = buf;
        return 0;
    }
    char gname[128];
    if (hf_to_gguf_name(name, gname, sizeof gname) != 0)
        return dms_errf(err, "%s: no GGUF name for tensor '%s'", ws->path, name);
    const dms_gguf_tensor *t = dms_gguf_find_tensor(&ws->gg, gname);
    if (!t) return optional ? 0 : dms_errf(err, "%s: missing tensor '%s'", ws->path, gname);
    int ok = cols ? (t->n_dims == 2 && t->ne[0] == (uint64_t)cols && t->ne[1] == (uint64_t)rows)
                  : (t->n_dims == 1 && t->ne[0] == (uint64_t)rows);
    if (!ok)
        return dms_errf(err, "%s: tensor '%s' has shape [%llu x %llu] (ne, innermost first), config expects [%d x %d]",
                        ws->path, gname, (unsigned long long)t->ne[0],
                        (unsigned long long)(t->n_dims > 1 ? t->ne[1] : 1), cols ? cols : rows, cols ? rows : 1);
    float *buf = malloc(sizeof(float) * n);
    if (!buf) return dms_errf(err, "%s: out of memory for '%s'", ws->path, gname);
    if (dms_gguf_dequantize(&ws->gg, t, buf, err) != 0) {
        free(buf);
        return -1;
    }
    note_type(ws->m, dms_ggml_type_name(t->type));
    if (ws->cfg->arch == DMS_ARCH_LLAMA && cols) {
        if ((strstr(gname, ".attn_q.weight") || strstr(gname, ".attn_k.weight")) &&
            unpermute_rows(buf, rows, cols, ws->cfg->head_dim) != 0) {
            free(buf);
            return dms_errf(err, "%s: out of memory for '%s'", ws->path, gname);
        }
    }
    *out = buf;
    return 0;
}

/* Moves a host fp32 buffer into backend memory as `dtype` (frees the host
 * buffer; bf16 is rounded to nearest even, in place). */
static void *to_backend(const dms_backend *be, float *host, size_t n, dms_dtype dtype) {
    if (!host) return NULL;
    if (dtype == DMS_BF16) {
        uint16_t *h16 = (uint16_t *)host; /* narrowing front to back never overwrites an unread float */
        for (size_t i = 0; i < n; i++) h16[i] = dms_f32_to_bf16(host[i]);
    }
    void *dev = be->alloc(be->ctx, dms_dtype_bytes(dtype, n));
    if (dev) be->upload(be->ctx, dev, host, dms_dtype_bytes(dtype, n));
    free(host);
    return dev;
}

static int load_vec(weight_source *ws, const char *name, int len, int optional, float **dst, dms_err *err) {
    float *host;
    if (read_tensor(ws, name, len, 0, optional, &host, err) != 0) return -1;
    if (!host) return 0;
    *dst = to_backend(ws->m->be, host, (size_t)len, DMS_F32);
    ws->m->n_params += (size_t)len;
    return *dst ? 0 : dms_errf(err, "%s: backend out of memory for '%s'", ws->path, name);
}

static int load_mat(weight_source *ws, const char *name, int rows, int cols, int optional, dms_mat *dst,
                    dms_err *err) {
    const int kept = load_mat_kept(ws, name, rows, cols, dst, err);
    if (kept) return kept < 0 ? -1 : 0;
    float *host;
    if (read_tensor(ws, name, rows, cols, optional, &host, err) != 0) return -1;
    if (!host) return 0;
    dst->dtype = ws->m->be->weight_dtype;
    dst->rows = rows;
    dst->cols = cols;
    dst->data = to_backend(ws->m->be, host, (size_t)rows * cols, dst->dtype);
    ws->m->n_params += (size_t)rows * cols;
    return dst->data ? 0 : dms_errf(err, "%s: backend out of memory for '%s'", ws->path, name);
}

/* The DMS heads of a DMS checkpoint (cfg.dms.present): the adapter's
 * tensors under NVIDIA's names, or (neuron) the decision rows of q_proj. */
static int load_heads(weight_source *ws, dms_err *err) {
    dms_model *m = ws->m;
    const dms_config *c = &m->cfg;
    if (!c->dms.present) return 0;
    if (!c->dms.separate_alpha) return dms_model_init_heads(m, &c->dms, err);
    const int d = c->hidden, KV = c->n_kv_heads;
    for (int l = 0; l < c->n_layers; l++) {
        dms_heads *h = &m->layers[l].heads;
        char n[160];
        float *w = NULL, *g = NULL;
        snprintf(n, sizeof n, "model.layers.%d.self_attn.dms_proj_alpha.weight", l);
        if (read_tensor(ws, n, KV, d, 0, &w, err) != 0) return -1;
        snprintf(n, sizeof n, "model.layers.%d.self_attn.dms_proj_alpha_norm.weight", l);
        if (read_tensor(ws, n, d, 0, 0, &g, err) != 0) {
            free(w);
            return -1;
        }
        h->w_a = (dms_mat){to_backend(m->be, w, (size_t)KV * d, DMS_F32), DMS_F32, KV, d};
        h->w_a_norm = to_backend(m->be, g, (size_t)d, DMS_F32);
        if (!h->w_a.data || !h->w_a_norm) return dms_errf(err, "%s: backend out of memory for DMS heads", ws->path);
    }
    m->has_heads = 1;
    return 0;
}

static int load_weights(weight_source *ws, dms_err *err) {
    dms_model *m = ws->m;
    const dms_config *c = &m->cfg;
    const int d = c->hidden, hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    if (load_mat(ws, "model.embed_tokens.weight", c->vocab, d, 0, &m->embed, err) ||
        load_vec(ws, "model.norm.weight", d, 0, &m->final_norm, err))
        return -1;
    if (c->tie_embeddings) {
        m->lm_head = m->embed;
    } else if (load_mat(ws, "lm_head.weight", c->vocab, d, 0, &m->lm_head, err)) {
        return -1;
    }
    m->layers = calloc((size_t)c->n_layers, sizeof(dms_layer));
    if (!m->layers) return dms_errf(err, "%s: out of memory", ws->path);
    for (int l = 0; l < c->n_layers; l++) {
        dms_layer *L = &m->layers[l];
        char n[160];
#define NAME(suffix) (snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix), n)
        if (load_vec(ws, NAME("input_layernorm.weight"), d, 0, &L->attn_norm, err) ||
            load_vec(ws, NAME("post_attention_layernorm.weight"), d, 0, &L->ffn_norm, err) ||
            load_mat(ws, NAME("self_attn.q_proj.weight"), qd, d, 0, &L->wq, err) ||
            load_mat(ws, NAME("self_attn.k_proj.weight"), kvd, d, 0, &L->wk, err) ||
            load_mat(ws, NAME("self_attn.v_proj.weight"), kvd, d, 0, &L->wv, err) ||
            load_mat(ws, NAME("self_attn.o_proj.weight"), d, qd, 0, &L->wo, err) ||
            load_mat(ws, NAME("mlp.gate_proj.weight"), c->intermediate, d, 0, &L->w_gate, err) ||
            load_mat(ws, NAME("mlp.up_proj.weight"), c->intermediate, d, 0, &L->w_up, err) ||
            load_mat(ws, NAME("mlp.down_proj.weight"), d, c->intermediate, 0, &L->w_down, err))
            return -1;
        if (c->qkv_bias &&
            (load_vec(ws, NAME("self_attn.q_proj.bias"), qd, 0, &L->bq, err) ||
             load_vec(ws, NAME("self_attn.k_proj.bias"), kvd, 0, &L->bk, err) ||
             load_vec(ws, NAME("self_attn.v_proj.bias"), kvd, 0, &L->bv, err)))
            return -1;
        if (c->qk_norm && (load_vec(ws, NAME("self_attn.q_norm.weight"), hd, 0, &L->q_norm, err) ||
                           load_vec(ws, NAME("self_attn.k_norm.weight"), hd, 0, &L->k_norm, err)))
            return -1;
#undef NAME
    }
    /* Rotary frequencies; Llama 3.1 GGUFs carry their scaling as per-pair
     * divisors in rope_freqs.weight. */
    float *inv = malloc(sizeof(float) * (size_t)(hd / 2));
    if (!inv) return dms_errf(err, "%s: out of memory", ws->path);
    dms_config_rope_inv_freq(c, inv);
    if (ws->is_gguf) {
        const dms_gguf_tensor *rf = dms_gguf_find_tensor(&ws->gg, "rope_freqs.weight");
        if (rf) {
            if (dms_gguf_tensor_nelem(rf) != (uint64_t)(hd / 2)) {
                free(inv);
                return dms_errf(err, "%s: rope_freqs.weight has %llu values, expected %d", ws->path,
                                (unsigned long long)dms_gguf_tensor_nelem(rf), hd / 2);
            }
            float *fac = malloc(sizeof(float) * (size_t)(hd / 2));
            if (!fac) {
                free(inv);
                return dms_errf(err, "%s: out of memory", ws->path);
            }
            if (dms_gguf_dequantize(&ws->gg, rf, fac, err) != 0) {
                free(fac);
                free(inv);
                return -1;
            }
            for (int i = 0; i < hd / 2; i++) inv[i] /= fac[i];
            free(fac);
        }
    }
    m->inv_freq = to_backend(m->be, inv, (size_t)(hd / 2), DMS_F32);
    if (!m->inv_freq) return dms_errf(err, "%s: backend out of memory", ws->path);
    return load_heads(ws, err);
}

int dms_model_load(dms_model *m, const char *path, const dms_backend *be, int flags, dms_err *err) {
    memset(m, 0, sizeof *m);
    m->be = be;
    m->path = strdup(path);
    if (!m->path) return dms_errf(err, "%s: out of memory", path);
    weight_source ws = {.path = path, .keep = (flags & DMS_LOAD_KEEP_DTYPE) != 0, .cfg = &m->cfg, .m = m};
    char p[PATH_MAX];
    int rc = 0;
    if (dms_is_dir(path)) {
        snprintf(p, sizeof p, "%s/config.json", path);
        if (dms_config_from_hf(&m->cfg, p, &m->source_config, err) != 0) goto fail;
        snprintf(p, sizeof p, "%s/tokenizer.json", path);
        const int have_tok = access(p, F_OK) == 0;
        if ((flags & DMS_LOAD_TOKENIZER) || ((flags & DMS_LOAD_TOKENIZER_IF_PRESENT) && have_tok)) {
            char cfgp[PATH_MAX];
            snprintf(cfgp, sizeof cfgp, "%s/tokenizer_config.json", path);
            if (!have_tok) {
                dms_errf(err, "%s: missing tokenizer (no tokenizer.json in the model folder)", path);
                goto fail;
            }
            m->tok = dms_tokenizer_from_json(p, access(cfgp, F_OK) == 0 ? cfgp : NULL, err);
            if (!m->tok) goto fail;
        }
        if (flags & DMS_LOAD_WEIGHTS) {
            if (dms_st_open_dir(&ws.st, path, err) != 0) goto fail;
            rc = load_weights(&ws, err);
            dms_st_close(&ws.st);
            if (rc) goto fail;
        }
    } else {
        m->from_gguf = 1;
        ws.is_gguf = 1;
        if (dms_gguf_open(&ws.gg, path, err) != 0) goto fail;
        if (dms_config_from_gguf(&m->cfg, &ws.gg, err) != 0) {
            dms_gguf_close(&ws.gg);
            goto fail;
        }
        const int have_tok = dms_gguf_find_kv(&ws.gg, "tokenizer.ggml.tokens") != NULL;
        if ((flags & DMS_LOAD_TOKENIZER) || ((flags & DMS_LOAD_TOKENIZER_IF_PRESENT) && have_tok)) {
            if (!have_tok) {
                dms_errf(err, "%s: missing tokenizer (no tokenizer.ggml.tokens metadata)", path);
                dms_gguf_close(&ws.gg);
                goto fail;
            }
            m->tok = dms_tokenizer_from_gguf(&ws.gg, err);
            if (!m->tok) {
                dms_gguf_close(&ws.gg);
                goto fail;
            }
        }
        if (flags & DMS_LOAD_WEIGHTS) rc = load_weights(&ws, err);
        dms_gguf_close(&ws.gg);
        if (rc) goto fail;
    }
    if (m->tok && dms_tokenizer_vocab_size(m->tok) > m->cfg.vocab) {
        dms_errf(err, "%s: tokenizer has %d tokens but the model's vocabulary is %d", path,
                 dms_tokenizer_vocab_size(m->tok), m->cfg.vocab);
        goto fail;
    }
    return 0;
fail:
    dms_model_free(m);
    return -1;
}

void dms_model_free(dms_model *m) {
    const dms_backend *be = m->be;
    if (be) {
        if (m->lm_head.data && m->lm_head.data != m->embed.data) be->free(be->ctx, m->lm_head.data);
        be->free(be->ctx, m->embed.data);
        be->free(be->ctx, m->final_norm);
        be->free(be->ctx, m->inv_freq);
        for (int l = 0; m->layers && l < m->cfg.n_layers; l++) {
            dms_layer *L = &m->layers[l];
            void *ptrs[] = {L->wq.data, L->wk.data, L->wv.data, L->wo.data, L->w_gate.data,
                            L->w_up.data, L->w_down.data, L->bq, L->bk, L->bv, L->q_norm,
                            L->k_norm, L->attn_norm, L->ffn_norm};
            for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) be->free(be->ctx, ptrs[i]);
        }
        dms_model_free_heads(m);
        dms_model_free_lora(m);
    }
    free(m->source_config);
    free(m->layers);
    if (m->tok) dms_tokenizer_free(m->tok);
    free(m->path);
    memset(m, 0, sizeof *m);
}
