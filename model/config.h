/* config.h - the architecture description of a decoder-only model, read
 * from a Hugging Face config.json or from GGUF metadata. One struct covers
 * Llama 3.x, Qwen2/2.5 and Qwen3: they differ only in the flags below. */
#ifndef DMS_CONFIG_H
#define DMS_CONFIG_H

#include "core/err.h"
#include "model/gguf.h"

typedef enum { DMS_ARCH_LLAMA = 0, DMS_ARCH_QWEN2, DMS_ARCH_QWEN3 } dms_arch;

/* Limits on the sizes a config may declare (dms_config_validate): every
 * dimension, and heads x head_dim, at most DMS_CONFIG_MAX_DIM (the largest
 * real models use ~10^5), the vocabulary at most DMS_CONFIG_MAX_VOCAB, so
 * that the int sizes derived from them cannot overflow. */
#define DMS_CONFIG_MAX_DIM (1 << 20)
#define DMS_CONFIG_MAX_VOCAB (1 << 24)

typedef enum { DMS_ROPE_DEFAULT = 0, DMS_ROPE_LLAMA3, DMS_ROPE_LINEAR } dms_rope_kind;

/* The DMS fields of a model's config.json, under NVIDIA's names
 * (Model-Optimizer's Qwen3ConfigDMS; defaults are that class's). A model
 * whose config.json has none of them is a base model (present = 0). */
typedef enum { DMS_HEADS_NEURON = 0, DMS_HEADS_ADAPTER = 1 } dms_heads_kind;
typedef struct dms_dms_config {
    int present;              /* any dms_* field was found (or heads were added) */
    float alpha_scale;        /* dms_alpha_scale, 100 */
    float alpha_offset;       /* dms_initial_alpha_offset, 5 */
    int window;               /* dms_window_size, 512 */
    int separate_alpha;       /* dms_separate_alpha, false: the neuron variant */
    int alpha_per_layer;      /* dms_alpha_per: "head" (0, default) or "layer" (1) */
    float tau;                /* dms_tau, 0.1 */
    float cr;                 /* dms_cr, 8 (documentation only) */
    int disable_eviction;     /* dms_disable_eviction, false */
    int block_size;           /* dms_paged_attention_block_size, 256 */
    int sink_tokens;          /* dms_sink_tokens: our optional extension (0: off, NVIDIA's rule):
                               * the first N tokens of a sequence are never evicted */
} dms_dms_config;

typedef struct dms_config {
    dms_arch arch;
    int n_layers;
    int hidden;        /* d_model */
    int intermediate;  /* MLP width */
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int vocab;
    int max_pos;       /* max_position_embeddings / context_length */
    float rms_eps;
    float rope_theta;
    dms_rope_kind rope_kind;
    float rope_factor, rope_low_freq, rope_high_freq;
    int rope_orig_max_pos;
    int tie_embeddings;
    int qkv_bias;      /* Qwen2: bias on q/k/v projections */
    int qk_norm;       /* Qwen3: per-head RMSNorm on q and k */
    int bos_id, eos_id; /* -1 if unknown */
    dms_dms_config dms;
} dms_config;

const char *dms_arch_name(dms_arch a);
/* NVIDIA's defaults (present = 0). */
void dms_dms_config_defaults(dms_dms_config *d);
/* Reads the dms_* fields of a parsed config.json (a cJSON object) over the
 * defaults; a field of the wrong type or out of range is an error naming
 * `path` and the field. */
struct cJSON;
int dms_dms_config_from_json(dms_dms_config *d, const struct cJSON *root, const char *path, dms_err *err);
/* Writes every dms_* field into a cJSON object (replacing existing ones). */
int dms_dms_config_to_json(const dms_dms_config *d, struct cJSON *root);
/* The variant name, "adapter" or "neuron". */
const char *dms_heads_kind_name(dms_heads_kind k);
/* Reads config.json; if raw_json is not NULL it receives the file's text
 * (malloc'd), kept so that an export can carry every field through. */
int dms_config_from_hf(dms_config *c, const char *config_json_path, char **raw_json, dms_err *err);
int dms_config_from_gguf(dms_config *c, const dms_gguf *g, dms_err *err);
/* Checks internal consistency (positive sizes, heads divide, even head_dim). */
int dms_config_validate(const dms_config *c, const char *what, dms_err *err);
/* Fills inv_freq[head_dim/2] with the (possibly scaled) rotary frequencies. */
void dms_config_rope_inv_freq(const dms_config *c, float *inv_freq);

#endif
