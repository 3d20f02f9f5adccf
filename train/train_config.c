/* train_config.c - table-driven JSON config for `dms train` (see
 * train_config.h): parsing with cJSON, defaults, nearest-key suggestions,
 * the CR and LR schedules. */
#include "train/train_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mapped_file.h"
#include "data/shards.h"

typedef enum { K_STR, K_INT, K_U64, K_FLOAT, K_ENUM } key_type;

typedef struct {
    const char *key;
    key_type type;
    size_t off;
    double lo, hi;           /* numeric range */
    const char *const *enums; /* K_ENUM: NULL-terminated names, index = value */
    const char *help;
} key_spec;

static const char *const variants[] = {"adapter", "neuron", NULL};
static const char *const alpha_pers[] = {"head", "layer", NULL};
static const char *const schedules[] = {"constant", "cosine", "linear", NULL};
static const char *const backends[] = {"cpu", "cuda", NULL};
static const char *const comp_pers[] = {"row", "head", NULL};
static const char *const packings[] = {"documents", "reference", NULL}; /* dms_packing order */
static const char *const cr_schedules[] = {"linear", "nvidia", NULL};
static const char *const kd_dirs[] = {"reverse", "forward", NULL};
static const char *const guide_ranks[] = {"layer", "row", "lane", NULL};
static const char *const guide_scores[] = {"attention", "attention_value", NULL};
static const char *const guide_reduces[] = {"max", "mean", NULL};
static const char *const backward_attentions[] = {"keep", "recompute", NULL};

#define F(name) offsetof(dms_train_config, name)
static const key_spec keys[] = {
    {"model", K_STR, F(model), 0, 0, NULL, "HF model folder or .gguf file"},
    {"data", K_STR, F(data), 0, 0, NULL, "folder of token shards made by dms prep"},
    {"output", K_STR, F(output), 0, 0, NULL, "run folder (checkpoints, metrics)"},
    {"steps", K_INT, F(steps), 1, 1e9, NULL, "optimiser steps"},
    {"batch_size", K_INT, F(batch_size), 1, 1e6, NULL, "packed rows per rank per step"},
    {"max_len", K_INT, F(max_len), 8, DMS_SHARD_MAX_LEN, NULL, "tokens per row (must match the shards)"},
    {"packing", K_ENUM, F(packing), 0, 0, packings, "documents or reference (must match the shards)"},
    {"seed", K_U64, F(seed), 0, 0, NULL, "seed of the eviction noise and data order"},
    {"threads", K_INT, F(threads), 0, 4096, NULL, "CPU threads, 0 = all cores"},
    {"backend", K_ENUM, F(backend), 0, 0, backends, "cpu or cuda (--backend overrides)"},
    {"lr", K_FLOAT, F(lr), 0, 1, NULL, "peak learning rate"},
    {"lr_schedule", K_ENUM, F(lr_schedule), 0, 0, schedules, "constant, cosine or linear decay"},
    {"warmup_steps", K_INT, F(warmup_steps), 0, 1e9, NULL, "linear warm-up steps"},
    {"min_lr_ratio", K_FLOAT, F(min_lr_ratio), 0, 1, NULL, "decay floor as a fraction of lr"},
    {"decay_steps", K_INT, F(decay_steps), 0, 1e9, NULL, "cosine/linear: decay over the last N steps only (0 = all after warm-up)"},
    {"beta1", K_FLOAT, F(beta1), 0, 0.999999, NULL, "AdamW beta1"},
    {"beta2", K_FLOAT, F(beta2), 0, 0.999999, NULL, "AdamW beta2"},
    {"adam_eps", K_FLOAT, F(adam_eps), 0, 1, NULL, "AdamW epsilon"},
    {"weight_decay", K_FLOAT, F(weight_decay), 0, 10, NULL, "AdamW decoupled weight decay"},
    {"grad_clip", K_FLOAT, F(grad_clip), 0, 1e9, NULL, "global gradient-norm clip (0 = off)"},
    {"variant", K_ENUM, F(variant), 0, 0, variants, "eviction-logit head: adapter or neuron"},
    {"alpha_per", K_ENUM, F(alpha_per), 0, 0, alpha_pers, "one decision per KV head or per layer"},
    {"window", K_INT, F(window), 0, 1 << 20, NULL, "eviction delay (sliding window) in tokens"},
    {"sinks", K_INT, F(sinks), 0, 1 << 20, NULL, "extension: first N tokens of each document never evicted (0 = off)"},
    {"tau", K_FLOAT, F(tau), 1e-4, 100, NULL, "temperature of the relaxed decisions"},
    {"tau_start", K_FLOAT, F(tau_start), 0, 100, NULL, "extension: anneal the temperature from this (0 = off)"},
    {"tau_steps", K_INT, F(tau_steps), 1, 1e9, NULL, "steps of the temperature anneal"},
    {"guide_weight", K_FLOAT, F(guide_weight), 0, 1e6, NULL,
     "extension: attention guidance, weight at step 0 (0 = off; docs/training.md)"},
    {"guide_steps", K_INT, F(guide_steps), 1, 1e9, NULL, "steps over which the guidance weight falls to 0"},
    {"guide_rank", K_ENUM, F(guide_rank), 0, 0, guide_ranks,
     "guidance targets ranked within each layer (even lanes per layer), over all layers of the row, or within each "
     "lane at the share of evictions the student gives it"},
    {"guide_score", K_ENUM, F(guide_score), 0, 0, guide_scores,
     "keys ranked by their largest future attention, or by it times their value's l1 norm"},
    {"guide_reduce", K_ENUM, F(guide_reduce), 0, 0, guide_reduces,
     "a key's future attention: the largest over the queries past the window, or their mean"},
    {"neuron_warmup", K_INT, F(neuron_warmup), 0, 1e9, NULL,
     "neuron variant: steps over which the borrowed channel fades out of attention (0 = off)"},
    {"alpha_scale", K_FLOAT, F(alpha_scale), 1e-3, 1e6, NULL, "decision logit scale s"},
    {"alpha_offset", K_FLOAT, F(alpha_offset), -1e3, 1e3, NULL, "decision logit offset o"},
    {"cr_final", K_FLOAT, F(cr_final), 1, 1000, NULL, "final target compression ratio"},
    {"steps_per_cr", K_INT, F(steps_per_cr), 1, 1e9, NULL, "steps per unit of CR in the schedule"},
    {"cr_schedule", K_ENUM, F(cr_schedule), 0, 0, cr_schedules,
     "linear (1 CR unit per steps_per_cr) or nvidia (1 to 16 over 510 steps, stop at cr_final)"},
    {"compression_weight", K_FLOAT, F(compression_weight), 0, 1e6, NULL, "weight of the compression loss"},
    {"compression_per", K_ENUM, F(compression_per), 0, 0, comp_pers,
     "row (NVIDIA) or head (extension: every layer and KV head held to the target)"},
    {"kd", K_ENUM, F(kd), 0, 0, kd_dirs,
     "reverse: KL(student||teacher) (NVIDIA); forward: KL(teacher||student) (extension, FastDMS)"},
    {"lora_rank", K_INT, F(lora_rank), 0, 4096, NULL, "LoRA rank on q/k/v/o (0 = off)"},
    {"lora_alpha", K_FLOAT, F(lora_alpha), 0, 1e6, NULL, "LoRA scaling numerator (scale = alpha/rank)"},
    {"save_every", K_INT, F(save_every), 1, 1e9, NULL, "checkpoint every N steps"},
    {"keep_last", K_INT, F(keep_last), 1, 1e6, NULL, "checkpoints kept"},
    {"log_every", K_INT, F(log_every), 1, 1e9, NULL, "progress line every N steps"},
    {"max_bad_steps", K_INT, F(max_bad_steps), 1, 1e6, NULL, "consecutive NaN/Inf steps before stopping"},
    {"rank_timeout_s", K_INT, F(rank_timeout_s), 0, 1e6, NULL,
     "seconds a multi-rank collective may wait before the job aborts (0 = never)"},
    {"kd_chunk", K_INT, F(kd_chunk), 1, 1 << 20, NULL, "tokens per KD chunk through the LM head"},
    {"backward_attention", K_ENUM, F(backward_attention), 0, 0, backward_attentions,
     "keep: each layer's student attention output and log-sum-exp kept for the backward (layers x tokens x heads x "
     "(head_dim + 1) floats); recompute: the backward runs the attention forward again"},
};
#undef F
#define N_KEYS (int)(sizeof keys / sizeof keys[0])

const char *dms_backend_kind_name(dms_backend_kind k) { return backends[k == DMS_BACKEND_CUDA]; }

void dms_train_config_defaults(dms_train_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->output, sizeof c->output, "checkpoints/run");
    c->steps = 1000;
    c->batch_size = 1;
    c->max_len = 2048;
    c->seed = 1234;
    c->lr = 3e-5f;
    c->lr_schedule = DMS_LR_CONSTANT;
    c->min_lr_ratio = 0.0f;
    c->beta1 = 0.9f;
    c->beta2 = 0.95f;
    c->adam_eps = 1e-8f;
    c->weight_decay = 0.0f;
    c->grad_clip = 1.0f;
    c->variant = DMS_VARIANT_ADAPTER;
    c->alpha_per = DMS_ALPHA_PER_HEAD;
    c->window = 256;
    c->tau = 0.1f;
    c->tau_steps = 100;
    c->guide_steps = 100;
    c->alpha_scale = 100.0f;
    c->alpha_offset = 5.0f;
    c->cr_final = 8.0f;
    c->steps_per_cr = 100;
    c->compression_weight = 1.0f;
    c->lora_rank = 0;
    c->lora_alpha = 16.0f;
    c->save_every = 100;
    c->keep_last = 3;
    c->log_every = 1;
    c->max_bad_steps = 5;
    c->rank_timeout_s = 600;
    c->kd_chunk = 128;
}

int dms_edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    int *row = malloc(sizeof(int) * (lb + 1));
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    int d = row[lb];
    free(row);
    return d;
}

static const char *nearest_key(const char *k) {
    const char *best = keys[0].key;
    int bd = 1 << 30;
    for (int i = 0; i < N_KEYS; i++) {
        int d = dms_edit_distance(k, keys[i].key);
        if (d < bd) {
            bd = d;
            best = keys[i].key;
        }
    }
    return best;
}

static int set_key(dms_train_config *c, const key_spec *ks, const cJSON *v, const char *what, dms_err *err) {
    char *base = (char *)c + ks->off;
    switch (ks->type) {
    case K_STR:
        if (!cJSON_IsString(v)) return dms_errf(err, "%s: '%s' must be a string", what, ks->key);
        if (strlen(v->valuestring) >= 1024) return dms_errf(err, "%s: '%s' is too long", what, ks->key);
        snprintf(base, 1024, "%s", v->valuestring);
        return 0;
    case K_ENUM:
        if (cJSON_IsString(v))
            for (int i = 0; ks->enums[i]; i++)
                if (!strcmp(v->valuestring, ks->enums[i])) {
                    *(int *)base = i;
                    return 0;
                }
        {
            char list[256] = "";
            for (int i = 0; ks->enums[i]; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", ks->enums[i]);
            return dms_errf(err, "%s: '%s' must be one of: %s", what, ks->key, list);
        }
    case K_INT:
    case K_U64:
    case K_FLOAT: {
        if (!cJSON_IsNumber(v)) return dms_errf(err, "%s: '%s' must be a number", what, ks->key);
        double x = v->valuedouble;
        if (ks->type != K_FLOAT && x != floor(x))
            return dms_errf(err, "%s: '%s' must be an integer, got %g", what, ks->key, x);
        if (ks->type == K_U64) {
            if (x < 0 || x > 18446744073709551615.0)
                return dms_errf(err, "%s: '%s' must be a non-negative integer", what, ks->key);
            *(uint64_t *)base = (uint64_t)x;
            return 0;
        }
        if (!(x >= ks->lo && x <= ks->hi))
            return dms_errf(err, "%s: '%s' = %g is outside [%g, %g]", what, ks->key, x, ks->lo, ks->hi);
        if (ks->type == K_INT) *(int *)base = (int)x;
        else *(float *)base = (float)x;
        return 0;
    }
    }
    return -1;
}

int dms_train_config_parse(dms_train_config *c, const char *json, const char *what, dms_err *err) {
    cJSON *root = cJSON_Parse(json);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return dms_errf(err, "%s: not a JSON object", what);
    }
    int rc = 0;
    for (const cJSON *e = root->child; e && rc == 0; e = e->next) {
        const key_spec *ks = NULL;
        for (int i = 0; i < N_KEYS; i++)
            if (!strcmp(keys[i].key, e->string)) ks = &keys[i];
        if (!ks) {
            if (e->string[0] == '_') continue; /* "_comment" and friends */
            rc = dms_errf(err, "%s: unknown key '%s' (did you mean '%s'?)", what, e->string, nearest_key(e->string));
            break;
        }
        rc = set_key(c, ks, e, what, err);
    }
    cJSON_Delete(root);
    if (rc) return rc;
    if (!c->model[0]) return dms_errf(err, "%s: 'model' is required", what);
    if (!c->data[0]) return dms_errf(err, "%s: 'data' is required", what);
    if (c->warmup_steps > c->steps) return dms_errf(err, "%s: warmup_steps exceeds steps", what);
    if (c->decay_steps > c->steps - c->warmup_steps)
        return dms_errf(err, "%s: decay_steps (%d) exceeds the steps after warm-up (%d)", what, c->decay_steps,
                        c->steps - c->warmup_steps);
    if (c->cr_schedule == DMS_CR_NVIDIA && c->cr_final > DMS_NVIDIA_CR_FINAL)
        return dms_errf(err, "%s: cr_final %g is beyond the nvidia schedule's final CR %g", what, c->cr_final,
                        DMS_NVIDIA_CR_FINAL);
    return 0;
}

int dms_train_config_load(dms_train_config *c, const char *path, dms_err *err) {
    char *text = dms_read_text_file(path, NULL, err);
    if (!text) return -1;
    int rc = dms_train_config_parse(c, text, path, err);
    free(text);
    return rc;
}

char *dms_train_config_to_json(const dms_train_config *c) {
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; i < N_KEYS; i++) {
        const key_spec *ks = &keys[i];
        const char *base = (const char *)c + ks->off;
        switch (ks->type) {
        case K_STR: cJSON_AddStringToObject(o, ks->key, base); break;
        case K_ENUM: cJSON_AddStringToObject(o, ks->key, ks->enums[*(const int *)base]); break;
        case K_INT: cJSON_AddNumberToObject(o, ks->key, *(const int *)base); break;
        case K_U64: cJSON_AddNumberToObject(o, ks->key, (double)*(const uint64_t *)base); break;
        case K_FLOAT: cJSON_AddNumberToObject(o, ks->key, *(const float *)base); break;
        }
    }
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}

float dms_guide_at(const dms_train_config *c, int step) {
    if (c->guide_weight <= 0 || step >= c->guide_steps) return 0.0f;
    return c->guide_weight * (1.0f - (float)step / (float)c->guide_steps);
}

float dms_tau_at(const dms_train_config *c, int step) {
    if (c->tau_start <= 0 || step >= c->tau_steps) return c->tau;
    const float f = (float)step / (float)c->tau_steps;
    return c->tau_start + (c->tau - c->tau_start) * f;
}

float dms_neuron_keep_at(const dms_train_config *c, int step) {
    if (c->variant != DMS_VARIANT_NEURON || c->neuron_warmup <= 0 || step >= c->neuron_warmup) return 0.0f;
    return 1.0f - (float)step / (float)c->neuron_warmup;
}

float dms_cr_at(const dms_train_config *c, int step) {
    if (c->cr_schedule == DMS_CR_NVIDIA) { /* Model-Optimizer's dms_schedule: 1 + (16 - 1) min(step / 510, 1) */
        const float progress = step < DMS_NVIDIA_CR_STEPS ? (float)step / (float)DMS_NVIDIA_CR_STEPS : 1.0f;
        return 1.0f + (float)(DMS_NVIDIA_CR_FINAL - 1.0) * progress;
    }
    float ramp = (float)step / (float)c->steps_per_cr; /* CR grows by 1 every steps_per_cr steps */
    float cr = 1.0f + ramp;
    return cr < c->cr_final ? cr : c->cr_final;
}

int dms_train_steps(const dms_train_config *c) {
    if (c->cr_schedule != DMS_CR_NVIDIA) return c->steps;
    /* the first step s with 1 + 15 s / 510 >= cr_final (exact for the
     * rational steps of NVIDIA's ramp; at least one step) */
    const double x = DMS_NVIDIA_CR_STEPS * ((double)c->cr_final - 1.0) / (DMS_NVIDIA_CR_FINAL - 1.0);
    int stop = (int)ceil(x - 1e-6);
    if (stop < 1) stop = 1;
    return stop < c->steps ? stop : c->steps;
}

float dms_lr_at(const dms_train_config *c, int step) {
    if (c->warmup_steps > 0 && step < c->warmup_steps) return c->lr * (float)(step + 1) / (float)c->warmup_steps;
    if (c->lr_schedule == DMS_LR_CONSTANT) return c->lr;
    /* the decay runs from the end of warm-up to the last step, or, with
     * decay_steps N, over the last N steps only (constant before them:
     * warm-up, stable, decay) */
    const int span = c->decay_steps > 0 ? c->decay_steps : c->steps - c->warmup_steps;
    const int start = c->steps - span;
    float frac = span > 0 ? (float)(step - start) / (float)span : 1.0f;
    if (frac < 0) frac = 0;
    if (frac > 1) frac = 1;
    float floor_lr = c->lr * c->min_lr_ratio;
    float shape = c->lr_schedule == DMS_LR_COSINE ? 0.5f * (1.0f + cosf((float)M_PI * frac)) : 1.0f - frac;
    return floor_lr + (c->lr - floor_lr) * shape;
}
