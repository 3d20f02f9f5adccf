/* config.h - the architecture description of a decoder-only model, read
 * from a Hugging Face config.json or from GGUF metadata. One struct covers
 * Llama 3.x, Qwen2/2.5 and Qwen3: they differ only in the flags below. */
#ifndef DMS_CONFIG_H
#define DMS_CONFIG_H

#include "core/err.h"
#include "model/gguf.h"

typedef enum { DMS_ARCH_LLAMA = 0, DMS_ARCH_QWEN2, DMS_ARCH_QWEN3 } dms_arch;

typedef enum { DMS_ROPE_DEFAULT = 0, DMS_ROPE_LLAMA3, DMS_ROPE_LINEAR } dms_rope_kind;

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
} dms_config;

const char *dms_arch_name(dms_arch a);
int dms_config_from_hf(dms_config *c, const char *config_json_path, dms_err *err);
int dms_config_from_gguf(dms_config *c, const dms_gguf *g, dms_err *err);
/* Checks internal consistency (positive sizes, heads divide, even head_dim). */
int dms_config_validate(const dms_config *c, const char *what, dms_err *err);
/* Fills inv_freq[head_dim/2] with the (possibly scaled) rotary frequencies. */
void dms_config_rope_inv_freq(const dms_config *c, float *inv_freq);

#endif
