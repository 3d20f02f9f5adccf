/* make_corpus.c - writes the seed corpora fuzz/corpus/<target>/ (run by
 * `scripts/fuzz.sh --seeds`; the output is committed). Text seeds are
 * hand-written here or taken from tests/fixtures; binary seeds are written
 * with the project's own writer where it has one (safetensors: dms_st_write)
 * or by the encoders below: GGUF (a minimal v3 writer: the project only
 * reads GGUF) and the HDF5 recipes of the shard and checkpoint targets
 * (fuzz/fuzz_h5.h). The tiny model
 * of the seeds: Llama-style, 1 layer, hidden 8, 2 query heads / 1 KV head of
 * 4, MLP 16, a 36-token byte-level BPE vocabulary. Deterministic output. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/mapped_file.h"
#include "fuzz/fuzz_common.h"
#include "model/gguf.h"
#include "model/safetensors_write.h"
#include "train/checkpoint.h"
#include "train/train_config.h"

/* ---- a growable byte buffer ---- */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }
static void sep(buf *b) { puts_(b, FUZZ_SEP); }
static void put_u8(buf *b, uint8_t v) { put(b, &v, 1); }
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_f32(buf *b, float v) { put(b, &v, 4); }

static const char *out_root;

static void write_seed(const char *target, const char *name, const void *d, size_t n) {
    char dir[PATH_MAX], path[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", out_root, target);
    dms_err err = {{0}};
    if (dms_mkdir_p(dir, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(d, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}
static void write_buf(const char *target, const char *name, buf *b) {
    write_seed(target, name, b->p, b->n);
    free(b->p);
    memset(b, 0, sizeof *b);
}
static void write_str(const char *target, const char *name, const char *s) { write_seed(target, name, s, strlen(s)); }

static void put_fixture(buf *b, const char *rel) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", fuzz_source_dir(), rel);
    dms_err err = {{0}};
    size_t n = 0;
    char *t = dms_read_text_file(path, &n, &err);
    if (!t) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    put(b, t, n);
    free(t);
}
static void copy_fixture(const char *target, const char *name, const char *rel) {
    buf b = {0};
    put_fixture(&b, rel);
    write_buf(target, name, &b);
}

/* The chat_template string of a tokenizer_config.json fixture. */
static void put_template(buf *b, const char *rel) {
    buf j = {0};
    put_fixture(&j, rel);
    put_u8(&j, 0);
    cJSON *root = cJSON_Parse((const char *)j.p);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
    if (!cJSON_IsString(t)) {
        fprintf(stderr, "%s: no chat_template\n", rel);
        exit(1);
    }
    puts_(b, t->valuestring);
    cJSON_Delete(root);
    free(j.p);
}

/* ---- the tiny vocabulary ---- */
#define G "\xc4\xa0" /* byte-level form of ' ' */
static const char *const vocab[] = {
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r",
    "s", "t", "u", "v", "w", "x", "y", "z", G, "he", "ll", G "t", G "w", "<|endoftext|>",
    "<|im_start|>", "<|im_end|>", ".", "!"};
#define NV 36
static const char *const merges[] = {"h e", "l l", G " t", G " w"};
#define NM 4

static const char chatml_tpl[] =
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a tiny model.<|im_end|>\\n' }}"
    "{% endif %}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

static void put_tokenizer_json(buf *b, int merges_as_arrays) {
    puts_(b, "{\"version\": \"1.0\", \"added_tokens\": [");
    for (int i = 31; i <= 33; i++) {
        char s[160];
        snprintf(s, sizeof s, "%s{\"id\": %d, \"content\": \"%s\", \"single_word\": false, \"lstrip\": false, "
                 "\"rstrip\": false, \"normalized\": false, \"special\": true}", i > 31 ? ", " : "", i, vocab[i]);
        puts_(b, s);
    }
    puts_(b, "], \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}]}, "
             "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", "
             "\"individual_digits\": true}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
             "\"trim_offsets\": true, \"use_regex\": true}]}, "
             "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": "
             "{\"id\": \"<|endoftext|>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}]}, "
             "\"decoder\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"dropout\": null, "
             "\"unk_token\": null, \"ignore_merges\": false, \"vocab\": {");
    for (int i = 0; i < NV; i++) {
        char s[64];
        snprintf(s, sizeof s, "%s\"%s\": %d", i ? ", " : "", vocab[i], i);
        puts_(b, s);
    }
    puts_(b, "}, \"merges\": [");
    for (int i = 0; i < NM; i++) {
        char s[64];
        if (merges_as_arrays) {
            const char *sp = strchr(merges[i], ' ');
            snprintf(s, sizeof s, "%s[\"%.*s\", \"%s\"]", i ? ", " : "", (int)(sp - merges[i]), merges[i], sp + 1);
        } else {
            snprintf(s, sizeof s, "%s\"%s\"", i ? ", " : "", merges[i]);
        }
        puts_(b, s);
    }
    puts_(b, "]}}\n");
}

static void put_tokenizer_config(buf *b) {
    puts_(b, "{\"bos_token\": \"<|endoftext|>\", \"eos_token\": {\"content\": \"<|im_end|>\"}, "
             "\"pad_token\": \"<|endoftext|>\", \"add_bos_token\": false, \"chat_template\": \"");
    for (const char *c = chatml_tpl; *c; c++) { /* as a JSON string */
        if (*c == '"' || *c == '\\') put_u8(b, '\\');
        put_u8(b, (uint8_t)*c);
    }
    puts_(b, "\"}\n");
}

/* ---- the tiny model's tensors ---- */
typedef struct {
    const char *name;
    int rows, cols; /* cols 0: a vector */
} tdef;

static const tdef llama_tensors[] = {
    {"model.embed_tokens.weight", NV, 8}, {"model.norm.weight", 8, 0},
    {"model.layers.0.input_layernorm.weight", 8, 0}, {"model.layers.0.post_attention_layernorm.weight", 8, 0},
    {"model.layers.0.self_attn.q_proj.weight", 8, 8}, {"model.layers.0.self_attn.k_proj.weight", 4, 8},
    {"model.layers.0.self_attn.v_proj.weight", 4, 8}, {"model.layers.0.self_attn.o_proj.weight", 8, 8},
    {"model.layers.0.mlp.gate_proj.weight", 16, 8}, {"model.layers.0.mlp.up_proj.weight", 16, 8},
    {"model.layers.0.mlp.down_proj.weight", 8, 16},
};
static const tdef qwen3_extra[] = {
    {"lm_head.weight", NV, 8}, {"model.layers.0.self_attn.q_norm.weight", 4, 0},
    {"model.layers.0.self_attn.k_norm.weight", 4, 0},
};
static const tdef qwen2_dms_extra[] = {
    {"model.layers.0.self_attn.q_proj.bias", 8, 0}, {"model.layers.0.self_attn.k_proj.bias", 4, 0},
    {"model.layers.0.self_attn.v_proj.bias", 4, 0}, {"model.layers.0.self_attn.dms_proj_alpha.weight", 1, 8},
    {"model.layers.0.self_attn.dms_proj_alpha_norm.weight", 8, 0},
};

static uint64_t rng = 88172645463325252ULL;
static float rnd(void) { /* xorshift64, in [-0.25, 0.25) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 - 0.5) * 0.5f;
}

static int fill(void *ctx, int index, float *out, dms_err *err) {
    const dms_st_out_tensor *t = (const dms_st_out_tensor *)ctx + index;
    (void)err;
    const int64_t n = dms_st_out_nelem(t);
    const int is_norm = strstr(t->name, "norm") != NULL;
    for (int64_t i = 0; i < n; i++) out[i] = is_norm ? 1.0f + rnd() * 0.2f : rnd();
    return 0;
}

/* Writes the tensors of defs (and extra) to a safetensors file and reads it
 * back into b. */
static void put_safetensors(buf *b, const tdef *defs, int n, const tdef *extra, int n_extra, int dtype_mix) {
    dms_st_out_tensor t[32];
    int k = 0;
    for (int pass = 0; pass < 2; pass++) {
        const tdef *d = pass ? extra : defs;
        for (int i = 0; i < (pass ? n_extra : n); i++, k++) {
            memset(&t[k], 0, sizeof t[k]);
            t[k].name = d[i].name;
            t[k].n_dims = d[i].cols ? 2 : 1;
            t[k].shape[0] = d[i].rows;
            t[k].shape[1] = d[i].cols;
            t[k].dtype = dtype_mix == 0 ? DMS_ST_F32 : dtype_mix == 1 ? DMS_ST_F16 : (k % 3 == 0 ? DMS_ST_BF16 : DMS_ST_F32);
        }
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/st.safetensors", fuzz_tmpdir());
    dms_err err = {{0}};
    if (dms_st_write(path, t, k, fill, t, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    size_t len = 0;
    dms_mapped_file f;
    if (dms_map_file(&f, path, &err) != 0) exit(1);
    len = f.size;
    put(b, f.data, len);
    dms_unmap_file(&f);
}

static const char llama_config[] =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 8, "
    "\"intermediate_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
    "\"head_dim\": 4, \"vocab_size\": 36, \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-05, "
    "\"rope_theta\": 500000.0, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, "
    "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 16}, "
    "\"tie_word_embeddings\": true, \"bos_token_id\": 31, \"eos_token_id\": 33, \"torch_dtype\": \"float32\"}\n";
static const char qwen3_config[] =
    "{\"architectures\": [\"Qwen3ForCausalLM\"], \"model_type\": \"qwen3\", \"hidden_size\": 8, "
    "\"intermediate_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
    "\"head_dim\": 4, \"vocab_size\": 36, \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-06, "
    "\"rope_parameters\": {\"rope_theta\": 1000000.0, \"rope_type\": \"default\"}, \"tie_word_embeddings\": false, "
    "\"attention_bias\": false, \"dms_alpha_scale\": 100.0, \"dms_initial_alpha_offset\": 5.0, "
    "\"dms_window_size\": 16, \"dms_paged_attention_block_size\": 8, \"dms_separate_alpha\": false, "
    "\"dms_alpha_per\": \"head\", \"dms_tau\": 0.1, \"dms_cr\": 4, \"dms_disable_eviction\": false}\n";
static const char qwen2_dms_config[] =
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"hidden_size\": 8, "
    "\"intermediate_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
    "\"vocab_size\": 36, \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-06, \"rope_theta\": 10000.0, "
    "\"rope_scaling\": null, \"tie_word_embeddings\": true, \"dms_separate_alpha\": true, \"dms_window_size\": 16, "
    "\"dms_paged_attention_block_size\": 8, \"dms_alpha_per\": \"layer\", \"dms_sink_tokens\": 2}\n";

/* ---- GGUF (writer for seeds only) ---- */
static void g_str(buf *b, const char *s) {
    put_u64(b, strlen(s));
    puts_(b, s);
}
static void g_kv_str(buf *b, const char *k, const char *v) {
    g_str(b, k);
    put_u32(b, GGUF_T_STRING);
    g_str(b, v);
}
static void g_kv_u32(buf *b, const char *k, uint32_t v) {
    g_str(b, k);
    put_u32(b, GGUF_T_UINT32);
    put_u32(b, v);
}
static void g_kv_f32(buf *b, const char *k, float v) {
    g_str(b, k);
    put_u32(b, GGUF_T_FLOAT32);
    put_f32(b, v);
}

typedef struct {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[2];
    uint32_t type; /* GGML_F32 or GGML_F16 */
} gdef;

static void put_gguf(buf *b, int with_tokenizer) {
    static const gdef t[] = {
        {"token_embd.weight", 2, {8, NV}, GGML_F32},   {"output_norm.weight", 1, {8, 1}, GGML_F32},
        {"blk.0.attn_norm.weight", 1, {8, 1}, GGML_F32}, {"blk.0.ffn_norm.weight", 1, {8, 1}, GGML_F32},
        {"blk.0.attn_q.weight", 2, {8, 8}, GGML_F16},  {"blk.0.attn_k.weight", 2, {8, 4}, GGML_F16},
        {"blk.0.attn_v.weight", 2, {8, 4}, GGML_F32},  {"blk.0.attn_output.weight", 2, {8, 8}, GGML_F32},
        {"blk.0.ffn_gate.weight", 2, {8, 16}, GGML_F16}, {"blk.0.ffn_up.weight", 2, {8, 16}, GGML_F32},
        {"blk.0.ffn_down.weight", 2, {16, 8}, GGML_F32},
    };
    const int nt = (int)(sizeof t / sizeof t[0]);
    buf kv = {0};
    int n_kv = 0;
    g_kv_str(&kv, "general.architecture", "llama"), n_kv++;
    g_kv_u32(&kv, "general.alignment", 32), n_kv++;
    g_kv_u32(&kv, "llama.block_count", 1), n_kv++;
    g_kv_u32(&kv, "llama.embedding_length", 8), n_kv++;
    g_kv_u32(&kv, "llama.feed_forward_length", 16), n_kv++;
    g_kv_u32(&kv, "llama.attention.head_count", 2), n_kv++;
    g_kv_u32(&kv, "llama.attention.head_count_kv", 1), n_kv++;
    g_kv_u32(&kv, "llama.context_length", 64), n_kv++;
    g_kv_f32(&kv, "llama.attention.layer_norm_rms_epsilon", 1e-5f), n_kv++;
    g_kv_f32(&kv, "llama.rope.freq_base", 10000.0f), n_kv++;
    if (with_tokenizer) {
        g_kv_str(&kv, "tokenizer.ggml.model", "gpt2"), n_kv++;
        g_kv_str(&kv, "tokenizer.ggml.pre", "smollm"), n_kv++;
        g_str(&kv, "tokenizer.ggml.tokens"), n_kv++;
        put_u32(&kv, GGUF_T_ARRAY);
        put_u32(&kv, GGUF_T_STRING);
        put_u64(&kv, NV);
        for (int i = 0; i < NV; i++) g_str(&kv, vocab[i]);
        g_str(&kv, "tokenizer.ggml.token_type"), n_kv++;
        put_u32(&kv, GGUF_T_ARRAY);
        put_u32(&kv, GGUF_T_INT32);
        put_u64(&kv, NV);
        for (int i = 0; i < NV; i++) put_u32(&kv, i >= 31 && i <= 33 ? 3 : 1);
        g_str(&kv, "tokenizer.ggml.merges"), n_kv++;
        put_u32(&kv, GGUF_T_ARRAY);
        put_u32(&kv, GGUF_T_STRING);
        put_u64(&kv, NM);
        for (int i = 0; i < NM; i++) g_str(&kv, merges[i]);
        g_kv_u32(&kv, "tokenizer.ggml.bos_token_id", 31), n_kv++;
        g_kv_u32(&kv, "tokenizer.ggml.eos_token_id", 33), n_kv++;
        g_str(&kv, "tokenizer.ggml.add_bos_token"), n_kv++;
        put_u32(&kv, GGUF_T_BOOL);
        put_u8(&kv, 1);
        g_kv_str(&kv, "tokenizer.chat_template", chatml_tpl), n_kv++;
    } else { /* an array of arrays, and a vocabulary size without tokens */
        g_str(&kv, "test.nested"), n_kv++;
        put_u32(&kv, GGUF_T_ARRAY);
        put_u32(&kv, GGUF_T_ARRAY);
        put_u64(&kv, 2);
        for (int i = 0; i < 2; i++) {
            put_u32(&kv, GGUF_T_UINT16);
            put_u64(&kv, 2);
            put_u32(&kv, 0x00020001u);
        }
        g_kv_u32(&kv, "llama.vocab_size", NV), n_kv++;
    }
    puts_(b, "GGUF");
    put_u32(b, 3);
    put_u64(b, (uint64_t)nt);
    put_u64(b, (uint64_t)n_kv);
    put(b, kv.p, kv.n);
    free(kv.p);
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        g_str(b, t[i].name);
        put_u32(b, t[i].n_dims);
        for (uint32_t d = 0; d < t[i].n_dims; d++) put_u64(b, t[i].ne[d]);
        put_u32(b, t[i].type);
        put_u64(b, off);
        const uint64_t bytes = t[i].ne[0] * t[i].ne[1] * (t[i].type == GGML_F32 ? 4 : 2);
        off += (bytes + 31) & ~(uint64_t)31;
    }
    while (b->n % 32) put_u8(b, 0);
    for (int i = 0; i < nt; i++) {
        const uint64_t n = t[i].ne[0] * t[i].ne[1];
        const int norm = strstr(t[i].name, "norm") != NULL;
        for (uint64_t k = 0; k < n; k++) {
            const float v = norm ? 1.0f + rnd() * 0.2f : rnd();
            if (t[i].type == GGML_F32) put_f32(b, v);
            else {
                uint16_t h = dms_f32_to_f16(v);
                put(b, &h, 2);
            }
        }
        while (b->n % 32) put_u8(b, 0);
    }
}

/* ---- HDF5 recipes (fuzz/fuzz_h5.h) ---- */
static void rec_str(buf *b, int dataset, const char *v) {
    const size_t n = strlen(v);
    put_u8(b, 11); /* fixed-length string, scalar */
    put_u8(b, 0);
    if (dataset) put_u8(b, 0);
    if (n < 255) {
        put_u8(b, (uint8_t)n);
    } else {
        put_u8(b, 255);
        put_u8(b, (uint8_t)(n & 255));
        put_u8(b, (uint8_t)(n >> 8));
    }
    puts_(b, v);
}
/* A scalar integer of a kind (5 int32, 7 int64, 8 uint64), raw little-endian. */
static void rec_int(buf *b, int dataset, int kind, uint64_t v) {
    const int size = kind == 5 ? 4 : 8;
    put_u8(b, (uint8_t)kind);
    put_u8(b, 0);
    if (dataset) put_u8(b, 0);
    put(b, &v, (size_t)size);
}
/* A 1-D dataset of n values given as one byte each (mode 1) or as a running
 * sum of bytes (mode 2). */
static void rec_bytes(buf *b, int kind, int mode, const uint8_t *v, int n) {
    put_u8(b, (uint8_t)kind);
    put_u8(b, 1);
    put_u8(b, (uint8_t)n);
    put_u8(b, (uint8_t)(mode << 2));
    put(b, v, (size_t)n);
}
static void rec_floats(buf *b, int rows, int cols) {
    put_u8(b, 9);
    put_u8(b, cols ? 2 : 1);
    put_u8(b, (uint8_t)rows);
    if (cols) put_u8(b, (uint8_t)cols);
    put_u8(b, 0);
    for (int i = 0; i < rows * (cols ? cols : 1); i++) put_f32(b, rnd());
}

/* A shard: attributes format, format_version, packing, tokenizer_hash,
 * max_len, vocab_size, source; datasets tokens, doc_offsets, loss_mask. */
static void shard_recipe(const char *name, int version, int max_len, int with_mask, int chunked_huge) {
    static const uint8_t tok[] = {31, 7, 4, 11, 11, 14, 26, 19, 7, 4, 33, 32, 0, 1, 2, 3, 33, 34};
    static const uint8_t off[] = {0, 6, 5, 7}; /* running sum: 0 6 11 18 */
    static const uint8_t mask[] = {1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    buf b = {0};
    rec_str(&b, 0, "dms-tokens");
    rec_int(&b, 0, 5, (uint64_t)version);
    if (version >= 2) rec_str(&b, 0, "documents");
    else put_u8(&b, 0);
    rec_int(&b, 0, 8, 0x1234abcd5678ef00ULL);
    rec_int(&b, 0, 5, (uint64_t)max_len);
    rec_int(&b, 0, 5, NV);
    rec_str(&b, 0, "seed corpus");
    if (chunked_huge) { /* 2^32 tokens declared, none stored */
        put_u8(&b, 6);
        put_u8(&b, 1);
        put_u8(&b, 0xF0 + 8);
        put_u8(&b, 1);
    } else {
        rec_bytes(&b, 6, 1, tok, 18);
    }
    if (chunked_huge) { /* three documents of under 2^31 tokens ending at 2^32, raw */
        put_u8(&b, 8);
        put_u8(&b, 1);
        put_u8(&b, 4);
        put_u8(&b, 0);
        put_u64(&b, 0);
        put_u64(&b, (UINT64_C(1) << 31) - 1);
        put_u64(&b, (UINT64_C(1) << 32) - 2);
        put_u64(&b, UINT64_C(1) << 32);
    } else {
        rec_bytes(&b, 8, 2, off, 4);
    }
    if (with_mask) rec_bytes(&b, 2, 1, mask, 18);
    else put_u8(&b, 0);
    put_u8(&b, 0); /* no cut */
    write_buf("shard", name, &b);
}

/* CRC-32 (zlib's polynomial), for seeds whose checksums verify. */
static uint32_t crc32_of(const void *p, size_t n) {
    const uint8_t *b = p;
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= b[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return c ^ 0xffffffffu;
}

/* The crc32 attribute spec of an entry (uint32 scalar), or absent. */
static void rec_crc(buf *b, int with_crc, const void *bytes, size_t n) {
    if (!with_crc) {
        put_u8(b, 0);
        return;
    }
    put_u8(b, 6);
    put_u8(b, 0);
    put_u32(b, crc32_of(bytes, n));
}

/* A checkpoint: root attributes format, format_version, step, checksum;
 * entries config, git_revision, step, seed, samples_seen, params/w,
 * adam_m/w, adam_v/w, params/b, each followed by its crc32 attribute. */
static void checkpoint_recipe(const char *name, int step, int with_config, int with_crc) {
    buf b = {0};
    rec_str(&b, 0, DMS_CKPT_FORMAT);
    rec_int(&b, 0, 7, DMS_CKPT_FORMAT_VERSION);
    rec_int(&b, 0, 7, (uint64_t)step);
    if (with_crc) rec_str(&b, 0, DMS_CKPT_CHECKSUM);
    else put_u8(&b, 0);
    if (with_config) {
        dms_train_config c;
        dms_train_config_defaults(&c);
        snprintf(c.model, sizeof c.model, "m.gguf");
        snprintf(c.data, sizeof c.data, "d");
        snprintf(c.output, sizeof c.output, "o");
        char *j = dms_train_config_to_json(&c);
        rec_str(&b, 1, j);
        rec_crc(&b, with_crc, j, strlen(j) + 1);
        free(j);
    } else {
        put_u8(&b, 0);
        put_u8(&b, 0);
    }
    rec_str(&b, 1, "abc1234");
    rec_crc(&b, with_crc, "abc1234", 8);
    const int64_t ints[3] = {step, 1234, 8};
    for (int i = 0; i < 3; i++) {
        rec_int(&b, 1, 7, (uint64_t)ints[i]);
        rec_crc(&b, with_crc, &ints[i], 8);
    }
    for (int i = 0; i < 4; i++) {
        const size_t at = b.n;
        rec_floats(&b, 4, i < 3 ? 4 : 0);
        const size_t head = i < 3 ? 5 : 4; /* kind, rank, dims, flags */
        rec_crc(&b, with_crc, b.p + at + head, b.n - at - head);
    }
    put_u8(&b, 0);
    write_buf("checkpoint", name, &b);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT_DIR (fuzz/corpus)\n", argv[0]);
        return 2;
    }
    out_root = argv[1];
    buf b = {0};

    /* safetensors */
    put_safetensors(&b, llama_tensors, 11, NULL, 0, 2);
    write_buf("safetensors", "tiny_mixed.safetensors", &b);
    put_safetensors(&b, llama_tensors, 3, qwen3_extra, 3, 1);
    write_buf("safetensors", "tiny_f16.safetensors", &b);
    {
        static const char h[] = "{\"__metadata__\": {\"format\": \"pt\"}, \"s\": {\"dtype\": \"I32\", \"shape\": [], "
                                "\"data_offsets\": [0, 4]}, \"e\": {\"dtype\": \"BF16\", \"shape\": [0, 3], "
                                "\"data_offsets\": [4, 4]}, \"u\": {\"dtype\": \"U8\", \"shape\": [2, 2], "
                                "\"data_offsets\": [4, 8]}}";
        put_u64(&b, sizeof h - 1);
        puts_(&b, h);
        put_u32(&b, 7);
        put_u32(&b, 0x04030201u);
        write_buf("safetensors", "hand_scalar_empty.safetensors", &b);
        put_u64(&b, 2);
        puts_(&b, "{}");
        write_buf("safetensors", "empty_header.safetensors", &b);
    }

    /* safetensors index */
    copy_fixture("safetensors_index", "tiny_qwen2.index.json", "tests/fixtures/models/tiny_qwen2/model.safetensors.index.json");
    write_str("safetensors_index", "one_shard.index.json",
              "{\"metadata\": {\"total_size\": 4}, \"weight_map\": {\"model.embed_tokens.weight\": "
              "\"model-00001-of-00003.safetensors\", \"model.norm.weight\": \"model-00003-of-00003.safetensors\"}}\n");

    /* GGUF */
    put_gguf(&b, 1);
    write_buf("gguf", "tiny_llama_tok.gguf", &b);
    put_gguf(&b, 0);
    write_buf("gguf", "tiny_llama_nested.gguf", &b);
    copy_fixture("gguf", "quant.gguf", "tests/fixtures/quant/quant.gguf");

    /* tokenizer: tokenizer.json SEP tokenizer_config.json SEP text */
    put_tokenizer_json(&b, 0);
    sep(&b);
    put_tokenizer_config(&b);
    sep(&b);
    puts_(&b, "hello the world<|im_start|>user\n12 tell!");
    write_buf("tokenizer", "tiny.txt", &b);
    put_tokenizer_json(&b, 1);
    write_buf("tokenizer", "tiny_array_merges.txt", &b);
    put_fixture(&b, "tests/fixtures/tokenizer/tiny_llama3/tokenizer.json");
    sep(&b);
    put_fixture(&b, "tests/fixtures/tokenizer/tiny_llama3/tokenizer_config.json");
    sep(&b);
    puts_(&b, "I'm  here: 1234 caf\xc3\xa9 \xf0\x9f\x98\x80<|eot_id|>");
    write_buf("tokenizer", "tiny_llama3.txt", &b);
    put_fixture(&b, "tests/fixtures/tokenizer/tiny_qwen2/tokenizer.json");
    sep(&b);
    put_fixture(&b, "tests/fixtures/tokenizer/tiny_qwen2/tokenizer_config.json");
    write_buf("tokenizer", "tiny_qwen2.txt", &b);

    /* chat templates: template SEP role SEP content ... */
    put(&b, chatml_tpl, strlen(chatml_tpl));
    puts_(&b, FUZZ_SEP "user" FUZZ_SEP "Hi there" FUZZ_SEP "assistant" FUZZ_SEP "Hello!");
    write_buf("chat_template", "chatml_default_system.txt", &b);
    put_template(&b, "tests/fixtures/tokenizer/tiny_qwen2/tokenizer_config.json");
    puts_(&b, FUZZ_SEP "system" FUZZ_SEP "Be brief." FUZZ_SEP "user" FUZZ_SEP "2+2?");
    write_buf("chat_template", "qwen2.txt", &b);
    put_template(&b, "tests/fixtures/tokenizer/tiny_llama3/tokenizer_config.json");
    puts_(&b, FUZZ_SEP "user" FUZZ_SEP "  \xe3\x80\x80 padded \xc2\xa0" FUZZ_SEP "assistant");
    write_buf("chat_template", "llama3.txt", &b);
    write_str("chat_template", "expressions.txt",
              "{%- set ns = namespace(n=0) -%}{% for m in messages if m.role != 'x' %}{% set ns.n = ns.n + 1 %}"
              "{{ loop.index0 }}:{{ m['role'] | upper }}={{ (m.content or '') | trim | length }}"
              "{% if not loop.last %}, {% elif m.content is string %}.{% endif %}{% endfor %}"
              "{{ messages | tojson }}{{ ns.n * 2 - 1 }}{{ 'a,b' .split(',') | join('|') }}"
              "{% if add_generation_prompt %}{{ bos_token ~ eos_token }}{% else %}{{ raise_exception('no') }}{% endif %}"
              "{{ strftime_now('%d %b %Y') }}{{ date_string | default('none') }}{{ range(3) | list }}"
              "{% macro f(x) %}[{{ x }}]{% endmacro %}{{ f(messages[0]['content'][1:4]) }}"
              "\n--8<--\nuser\n--8<--\nhello there\n--8<--\nassistant\n--8<--\n<think>x</think>ok");
    write_str("chat_template", "quoted_system.txt",
              "{{ \"<|im_start|>system\\nSay \\\"hi\\\"\\tthen\\\\go<|im_end|>\\n\" }}{{ '<|im_start|>system\\n' + x }}"
              "\n--8<--\nuser\n--8<--\nx");

    /* model config.json */
    write_str("model_config", "llama3_rope.json", llama_config);
    write_str("model_config", "qwen3_dms_neuron.json", qwen3_config);
    write_str("model_config", "qwen2_dms_adapter.json", qwen2_dms_config);
    copy_fixture("model_config", "nvidia_adapter.json", "tests/fixtures/nvidia/adapter/config.json");
    copy_fixture("model_config", "tiny_qwen2.json", "tests/fixtures/models/tiny_qwen2/config.json");
    write_str("model_config", "linear_rope.json",
              "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, "
              "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"vocab_size\": 512, \"rope_scaling\": "
              "{\"type\": \"linear\", \"factor\": 2.0}, \"dms_cr\": 8, \"dms_tau\": 0.5}\n");

    /* training config */
    copy_fixture("train_config", "demo.json", "configs/demo.json");
    copy_fixture("train_config", "smollm2_kvcr8.json", "configs/smollm2_kvcr8.json");
    write_str("train_config", "every_key.json",
              "{\"model\": \"m.gguf\", \"data\": \"d\", \"output\": \"o\", \"steps\": 10, \"batch_size\": 2, "
              "\"max_len\": 64, \"seed\": 7, \"threads\": 1, \"backend\": \"cpu\", \"lr\": 0.001, \"lr_schedule\": "
              "\"cosine\", \"warmup_steps\": 2, \"min_lr_ratio\": 0.1, \"variant\": \"neuron\", \"alpha_per\": "
              "\"layer\", \"window\": 8, \"sinks\": 1, \"tau\": 0.1, \"tau_start\": 1.0, \"tau_steps\": 5, "
              "\"cr_final\": 4, \"steps_per_cr\": 2, \"compression_per\": \"head\", \"lora_rank\": 2, "
              "\"lora_alpha\": 4, \"save_every\": 5, \"keep_last\": 2, \"log_every\": 1, \"kd_chunk\": 32}\n");
    write_str("train_config", "typo.json", "{\"model\": \"m\", \"data\": \"d\", \"lr_shedule\": \"linear\"}\n");

    /* prep JSONL: first byte = tokenizer (qwen2+template / llama3+template / no template) + mask bit */
    static const char lines[] =
        "{\"text\": \"hello world. 12\"}\n\n"
        "{\"prompt\": \"say hi\", \"response\": \"hi!\"}\n"
        "  \t\r\n"
        "{\"messages\": [{\"role\": \"system\", \"content\": \"short\"}, {\"role\": \"user\", \"content\": \"<|im_start|>x\"}, "
        "{\"role\": \"assistant\", \"content\": \"ok\"}]}\n"
        "{\"text\": \"no newline at the end\"}";
    for (int sel = 0; sel < 6; sel++) {
        char name[32];
        snprintf(name, sizeof name, "mixed_%d.jsonl", sel);
        put_u8(&b, (uint8_t)((sel % 3) | ((sel / 3) << 2)));
        puts_(&b, lines);
        write_buf("prep_jsonl", name, &b);
    }

    /* eval data: first byte = kind */
    put_u8(&b, 0);
    puts_(&b, "{\"problem\": \"What is 6*7?\", \"answer\": \"42\"}\n{\"question\": \"1+1\", \"answer\": 2}\n"
              "{\"problem\": \"p\", \"answer\": \"$1,000$\"}\n");
    write_buf("eval_data", "aime.jsonl", &b);
    put_u8(&b, 1);
    puts_(&b, "{\"Question\": \"Which?\", \"Correct Answer\": \"a\", \"Incorrect Answer 1\": \"b\", "
              "\"Incorrect Answer 2\": \"c\", \"Incorrect Answer 3\": \"d\"}\n");
    write_buf("eval_data", "gpqa.jsonl", &b);
    put_u8(&b, 2);
    puts_(&b, "{\"text\": \"The cache grows.\"}\n\n{\"text\": \"Second document\"}\n");
    write_buf("eval_data", "kl.jsonl", &b);
    put_u8(&b, 3);
    puts_(&b, "Plain text for the kl task.\nTwo lines.\n");
    write_buf("eval_data", "kl.txt", &b);
    put_u8(&b, 4);
    puts_(&b, "{\"fingerprint\": \"fp-0123\", \"key\": \"0\", \"problem\": 0, \"sample\": 0, \"correct\": true, "
              "\"answered\": true, \"tokens\": 12, \"kv\": {\"seen\": 20, \"held_mean\": 5.5, \"kv_cr\": 3.6, "
              "\"decision_cr\": 4}}\n{\"fingerprint\": \"fp-0123\", \"key\": \"1\", \"length\": 64, \"depth\": 50, "
              "\"correct\": false, \"kl\": 0.25, \"nll\": 2.5, \"ref_nll\": 2.1, \"tokens\": 32}\n"
              "{\"fingerprint\": \"fp-0123\", \"key\": \"2\", \"cut");
    write_buf("eval_data", "item_log.jsonl", &b);
    put_u8(&b, 5);
    puts_(&b, "{\"task\": \"kl\", \"policy\": \"dms\", \"tag\": \"a\", \"metric\": {\"name\": \"kl\", \"value\": 0.2}, "
              "\"kv\": {\"kv_cr\": 3.5}}" FUZZ_SEP "{\"task\": \"kl\", \"policy\": \"dms\", \"metric\": {}, "
              "\"kv\": {\"kv_cr\": 2}}" FUZZ_SEP "not json");
    write_buf("eval_data", "results.json", &b);

    /* HF model folders: config.json SEP model.safetensors [SEP tokenizer.json] */
    puts_(&b, llama_config);
    sep(&b);
    put_safetensors(&b, llama_tensors, 11, NULL, 0, 2);
    write_buf("model_load", "tiny_llama.txt", &b);
    puts_(&b, llama_config);
    sep(&b);
    put_safetensors(&b, llama_tensors, 11, NULL, 0, 0);
    sep(&b);
    put_tokenizer_json(&b, 0);
    write_buf("model_load", "tiny_llama_tok.txt", &b);
    puts_(&b, qwen3_config);
    sep(&b);
    put_safetensors(&b, llama_tensors, 11, qwen3_extra, 3, 1);
    write_buf("model_load", "tiny_qwen3_neuron.txt", &b);
    puts_(&b, qwen2_dms_config);
    sep(&b);
    put_safetensors(&b, llama_tensors, 11, qwen2_dms_extra, 5, 2);
    write_buf("model_load", "tiny_qwen2_adapter.txt", &b);

    /* HDF5 */
    shard_recipe("v2_mask_len4.bin", 2, 4, 1, 0);
    shard_recipe("v1_nomask_len8.bin", 1, 8, 0, 0);
    shard_recipe("v2_declared_2e32.bin", 2, 4, 0, 1);
    checkpoint_recipe("ckpt_config_crc.bin", 3, 1, 1);
    checkpoint_recipe("ckpt_config.bin", 3, 1, 0);
    checkpoint_recipe("ckpt_plain.bin", 1, 0, 0);
    printf("seed corpora written to %s\n", out_root);
    return 0;
}
