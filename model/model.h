/* model.h - a decoder-only transformer (Llama / Qwen2 / Qwen3) held in a
 * backend's memory, loaded from a Hugging Face folder or a GGUF file, and
 * its incremental forward pass over a plain (contiguous, per-layer) KV cache.
 * Every numeric op goes through the dms_backend op table. */
#ifndef DMS_MODEL_H
#define DMS_MODEL_H

#include <stdint.h>

#include "core/err.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "model/tokenizer.h"

typedef struct dms_layer {
    dms_mat wq, wk, wv, wo;          /* [H*hd, d], [KV*hd, d], [KV*hd, d], [d, H*hd] */
    dms_mat w_gate, w_up, w_down;    /* [ff, d], [ff, d], [d, ff] */
    float *bq, *bk, *bv;             /* Qwen2 only, else NULL */
    float *q_norm, *k_norm;          /* Qwen3 only: [hd] */
    float *attn_norm, *ffn_norm;     /* [d] */
} dms_layer;

typedef struct dms_model {
    dms_config cfg;
    const dms_backend *be;
    dms_mat embed;       /* [vocab, d] */
    dms_mat lm_head;     /* [vocab, d]; shares embed's data when tied */
    float *final_norm;   /* [d] */
    float *inv_freq;     /* [hd/2], backend memory */
    dms_layer *layers;
    dms_tokenizer *tok;  /* NULL if loaded without tokenizer */
    char *path;
    int from_gguf;
    char weight_types[128]; /* source dtypes seen, for `dms inspect` ("Q4_1, Q8_0, F32") */
    size_t n_params;
} dms_model;

typedef enum {
    DMS_LOAD_WEIGHTS = 1,
    DMS_LOAD_TOKENIZER = 2,            /* a missing tokenizer is an error */
    DMS_LOAD_TOKENIZER_IF_PRESENT = 4, /* load it when the model has one */
} dms_load_flags;

/* path: a Hugging Face model folder (config.json, safetensors, tokenizer.json)
 * or a .gguf file. flags: DMS_LOAD_WEIGHTS | DMS_LOAD_TOKENIZER. */
int dms_model_load(dms_model *m, const char *path, const dms_backend *be, int flags, dms_err *err);
void dms_model_free(dms_model *m);

/* Plain KV cache: per layer, K and V as [max_seq, n_kv_heads*head_dim]. */
typedef struct dms_kv_cache {
    int max_seq, len, n_layers;
    float **k, **v;
} dms_kv_cache;

int dms_kv_cache_init(dms_kv_cache *c, const dms_model *m, int max_seq, dms_err *err);
void dms_kv_cache_free(dms_kv_cache *c, const dms_model *m);

/* Scratch activations for up to max_tokens tokens per forward call. */
typedef struct dms_forward_state {
    int max_tokens;
    float *x, *xn, *q, *k, *v, *att, *gate, *up, *logits;
    int32_t *ids, *pos;
} dms_forward_state;

int dms_forward_state_init(dms_forward_state *s, const dms_model *m, int max_tokens, dms_err *err);
void dms_forward_state_free(dms_forward_state *s, const dms_model *m);

/* Runs n tokens (appended to the cache at positions cache->len ...) and
 * writes logits to host memory: [n, vocab] or, if last_only, [vocab] for
 * the last token. n may exceed s->max_tokens: the input is chunked. */
int dms_model_forward(const dms_model *m, dms_kv_cache *cache, dms_forward_state *s,
                      const int32_t *ids, int n, float *logits, int last_only, dms_err *err);

#endif
