/* model.h - a decoder-only transformer (Llama / Qwen2 / Qwen3) held in a
 * backend's memory, loaded from a Hugging Face folder or a GGUF file, with
 * the parts DMS adds to it: the eviction-logit heads of every layer
 * (adapter or neuron decision rows), optional LoRA branches, and the dms_*
 * config fields (cfg.dms). The frozen base weights are never written to
 * after loading. The transformer layer itself is model/layer.h; the
 * incremental forward pass over a KV cache is dms_model_forward below. */
#ifndef DMS_MODEL_H
#define DMS_MODEL_H

#include <stdint.h>

#include "core/err.h"
#include "kernels/arena.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "model/tokenizer.h"

/* LoRA targets of a layer's attention. */
enum { DMS_LORA_Q = 0, DMS_LORA_K, DMS_LORA_V, DMS_LORA_O, DMS_LORA_N };

/* y += scale * B (A x): A [r, in], B [out, r], fp32 (trainable). */
typedef struct dms_lora {
    dms_mat a, b;
} dms_lora;

/* The DMS heads of one layer (fp32, trainable). Adapter:
 * z_raw = W_a . RMSNorm(x; w_a_norm) with W_a [KV, d]. Neuron: the rows of
 * q_proj that feed channel D-1 of the first query head of each KV group,
 * held as their own [KV, d] tensor (+ their q bias, Qwen2) and applied as a
 * small matmul whose output replaces that channel. */
typedef struct dms_heads {
    dms_mat w_a;         /* adapter [KV, d] */
    float *w_a_norm;     /* adapter [d] */
    dms_mat q_rows;      /* neuron [KV, d] */
    float *q_rows_bias;  /* neuron [KV], NULL without q bias */
} dms_heads;

typedef struct dms_layer {
    dms_mat wq, wk, wv, wo;          /* [H*hd, d], [KV*hd, d], [KV*hd, d], [d, H*hd] */
    dms_mat w_gate, w_up, w_down;    /* [ff, d], [ff, d], [d, ff] */
    float *bq, *bk, *bv;             /* Qwen2 only, else NULL */
    float *q_norm, *k_norm;          /* Qwen3 only: [hd] */
    float *attn_norm, *ffn_norm;     /* [d] */
    dms_heads heads;                 /* DMS, when m->has_heads */
    dms_lora lora[DMS_LORA_N];       /* when m->lora_rank > 0 */
} dms_layer;

typedef struct dms_model {
    dms_config cfg;                  /* cfg.dms: the dms_* fields */
    const dms_backend *be;
    dms_mat embed;       /* [vocab, d] */
    dms_mat lm_head;     /* [vocab, d]; shares embed's data when tied */
    float *final_norm;   /* [d] */
    float *inv_freq;     /* [hd/2], backend memory */
    dms_layer *layers;
    int has_heads;       /* heads of kind cfg.dms.separate_alpha exist */
    int lora_rank;       /* 0: no LoRA */
    float lora_scale;    /* lora_alpha / rank */
    dms_tokenizer *tok;  /* NULL if loaded without tokenizer */
    char *path;
    char *source_config; /* the source config.json text, every field (NULL for GGUF) */
    int from_gguf;
    char weight_types[128]; /* source dtypes seen, for `dms inspect` ("Q4_1, Q8_0, F32") */
    size_t n_params;
} dms_model;

typedef enum {
    DMS_LOAD_WEIGHTS = 1,
    DMS_LOAD_TOKENIZER = 2,            /* a missing tokenizer is an error */
    DMS_LOAD_TOKENIZER_IF_PRESENT = 4, /* load it when the model has one */
    /* Inference: weight matrices keep their file dtype (GGUF blocks, F16,
     * BF16) where the backend reads it as it is (be->supports_dtype); the
     * rest, and every vector, is converted as without the flag. Not for
     * training (its frozen weights stay fp32 on the CPU). */
    DMS_LOAD_KEEP_DTYPE = 8,
} dms_load_flags;

/* path: a Hugging Face model folder (config.json, safetensors, tokenizer.json)
 * or a .gguf file. Frozen weights are converted to be->weight_dtype (with
 * DMS_LOAD_KEEP_DTYPE: kept as stored where the backend can). A
 * folder whose config.json says dms_separate_alpha: true must hold the
 * adapter tensors; a DMS model without it (the neuron variant) gets its
 * decision rows from q_proj. */
int dms_model_load(dms_model *m, const char *path, const dms_backend *be, int flags, dms_err *err);
void dms_model_free(dms_model *m);

/* Fresh DMS heads of kind d->separate_alpha (model/dms_heads.c), replacing
 * any: adapter W_a = 0 and norm = 1 (every logit starts at -offset);
 * neuron rows copied from q_proj. Sets m->cfg.dms = *d (present = 1). */
int dms_model_init_heads(dms_model *m, const dms_dms_config *d, dms_err *err);
/* LoRA branches of rank r on q/k/v/o of every layer: A uniform in
 * +-1/sqrt(in) from the counter RNG keyed by seed, B = 0. */
int dms_model_add_lora(dms_model *m, int rank, float alpha, uint64_t seed, dms_err *err);
/* Release the heads / the LoRA branches (dms_model_free calls both). */
void dms_model_free_heads(dms_model *m);
void dms_model_free_lora(dms_model *m);
/* model_rebase.c: dm, a DMS export of an adapter-variant run on base
 * (same shapes, no LoRA), takes base's weight tensors (say a GGUF's
 * blocks kept as stored) and base gets dm's, once every export matrix is
 * checked to be base's up to bf16 rounding (|a - b| <= 2^-8 |b| + 2^-24);
 * the DMS heads and config stay dm's. Free both as usual. */
int dms_model_take_base(dms_model *dm, dms_model *base, dms_err *err);
/* Query-projection row of the decision channel of KV head h (neuron). */
int dms_neuron_row(const dms_config *c, int h);

/* ---- attention strategies (model/layer.h) and the KV cache interface ---- */
struct dms_layer_acts;
struct dms_model;
/* An attention strategy for dms_layer_forward: attend() fills a->att
 * [n, H*hd] from a->q, a->k, a->v (after RoPE); it may read a->zraw
 * (student) and write a->lse. student = 1: the DMS heads run (decision
 * logits, the neuron channel swap) and LoRA branches apply. */
typedef struct dms_attn {
    int student;
    void (*attend)(struct dms_attn *self, const struct dms_model *m, int layer, struct dms_layer_acts *a, int n);
    /* Neuron variant only, the training warm-up (train config
     * neuron_warmup): the fraction g of the borrowed channel that attention
     * still sees, the decision logit scaled by 1 - g. 0 (DMS, inference):
     * the channel is zeroed and the logit whole. */
    float neuron_keep;
} dms_attn;

/* A KV cache (implementations in runtime/) is an attention strategy whose
 * attend() also stores the chunk's keys and values of the layer; the
 * forward pass advances len by the chunk after the last layer. */
typedef struct dms_kv_cache {
    dms_attn attn;
    int len;     /* tokens stored so far (= the next token's position) */
    int max_seq; /* capacity in tokens */
} dms_kv_cache;

/* Scratch of the forward pass for up to max_tokens tokens per call. */
typedef struct dms_forward_state {
    int max_tokens;
    dms_arena arena;
    struct dms_layer_acts *acts;
    float *x, *xn, *logits;
    int32_t *ids;
} dms_forward_state;

int dms_forward_state_init(dms_forward_state *s, const dms_model *m, int max_tokens, dms_err *err);
void dms_forward_state_free(dms_forward_state *s);

/* Runs n tokens (positions cache->len ...) through every layer with the
 * cache as attention strategy and writes logits to host memory: [n, vocab]
 * or, if last_only, [vocab] for the last token. n may exceed
 * s->max_tokens: the input is chunked. Checks the backend's status. */
int dms_model_forward(const dms_model *m, dms_kv_cache *cache, dms_forward_state *s, const int32_t *ids, int n,
                      float *logits, int last_only, dms_err *err);
/* One call of n <= s->max_tokens tokens at the given positions (host)
 * through every layer with strategy `attn` (tokens of several sequences,
 * e.g. a batched decode step, when the strategy knows which is which);
 * logits as above. Does not check the backend's status. */
void dms_model_forward_tokens(const dms_model *m, dms_attn *attn, dms_forward_state *s, const int32_t *ids,
                              const int32_t *pos, int n, float *logits, int last_only);

#endif
