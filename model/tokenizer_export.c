/* tokenizer_export.c - writes a Hugging Face tokenizer.json and
 * tokenizer_config.json from a GGUF file's tokenizer metadata
 * (tokenizer_export.h), so that an export of a GGUF model is a complete
 * Hugging Face folder. The pre-tokenizer table mirrors model/tokenizer.c's
 * GGUF loader (same regexes, same normaliser), written the way Hugging
 * Face's own tokenizer.json files for those models write them, so that the
 * JSON loader and the GGUF loader build the same tokenizer (same hash). */
#include "model/tokenizer_export.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/safetensors_write.h"
#include "model/tokenizer.h"

typedef enum { PRE_GPT2, PRE_SMOLLM, PRE_LLAMA3, PRE_QWEN2 } pre_style;

/* tokenizer.ggml.pre -> style; the same names model/tokenizer.c accepts. */
static int pre_from_name(const char *pre, pre_style *s) {
    static const struct { const char *name; pre_style s; } table[] = {
        {"smollm", PRE_SMOLLM},     {"gpt2", PRE_GPT2},     {"gpt-2", PRE_GPT2},
        {"default", PRE_GPT2},      {"llama-bpe", PRE_LLAMA3}, {"llama3", PRE_LLAMA3},
        {"llama-v3", PRE_LLAMA3},   {"qwen2", PRE_QWEN2},   {"deepseek-r1-qwen", PRE_QWEN2},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(pre, table[i].name)) {
            *s = table[i].s;
            return 0;
        }
    return -1;
}

static cJSON *byte_level(int add_prefix_space, int trim_offsets, int use_regex) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "ByteLevel");
    cJSON_AddBoolToObject(o, "add_prefix_space", add_prefix_space);
    cJSON_AddBoolToObject(o, "trim_offsets", trim_offsets);
    cJSON_AddBoolToObject(o, "use_regex", use_regex);
    return o;
}

static cJSON *split_regex(const char *re) {
    cJSON *o = cJSON_CreateObject(), *pat = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "Split");
    cJSON_AddStringToObject(pat, "Regex", re);
    cJSON_AddItemToObject(o, "pattern", pat);
    cJSON_AddStringToObject(o, "behavior", "Isolated");
    cJSON_AddBoolToObject(o, "invert", 0);
    return o;
}

static cJSON *sequence(const char *list_key, cJSON *a, cJSON *b) {
    cJSON *o = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "type", "Sequence");
    cJSON_AddItemToArray(arr, a);
    cJSON_AddItemToArray(arr, b);
    cJSON_AddItemToObject(o, list_key, arr);
    return o;
}

/* As Hugging Face writes these models' pre-tokenizers: SmolLM2 and GPT-2
 * use ByteLevel's own (GPT-2) regex, SmolLM2 after single digits; Llama 3
 * and Qwen2 split by their regex first, then ByteLevel without a regex. */
static cJSON *pre_tokenizer(pre_style s) {
    switch (s) {
    case PRE_GPT2: return byte_level(0, 1, 1);
    case PRE_SMOLLM: {
        cJSON *digits = cJSON_CreateObject();
        cJSON_AddStringToObject(digits, "type", "Digits");
        cJSON_AddBoolToObject(digits, "individual_digits", 1);
        return sequence("pretokenizers", digits, byte_level(0, 1, 1));
    }
    case PRE_LLAMA3: return sequence("pretokenizers", split_regex(DMS_REGEX_LLAMA3), byte_level(0, 1, 0));
    case PRE_QWEN2: return sequence("pretokenizers", split_regex(DMS_REGEX_QWEN2), byte_level(0, 1, 0));
    }
    return cJSON_CreateNull();
}

static cJSON *special_piece(const char *key, const char *id, int type_id) {
    cJSON *o = cJSON_CreateObject(), *in = cJSON_CreateObject();
    cJSON_AddStringToObject(in, "id", id);
    cJSON_AddNumberToObject(in, "type_id", type_id);
    cJSON_AddItemToObject(o, key, in);
    return o;
}

/* ByteLevel offsets, then (when the model wants BOS) BOS before each sequence. */
static cJSON *post_processor(const char *bos, int bos_id) {
    cJSON *bl = byte_level(1, 0, 1);
    if (!bos) return bl;
    cJSON *tp = cJSON_CreateObject(), *single = cJSON_CreateArray(), *pair = cJSON_CreateArray();
    cJSON_AddStringToObject(tp, "type", "TemplateProcessing");
    cJSON_AddItemToArray(single, special_piece("SpecialToken", bos, 0));
    cJSON_AddItemToArray(single, special_piece("Sequence", "A", 0));
    cJSON_AddItemToArray(pair, special_piece("SpecialToken", bos, 0));
    cJSON_AddItemToArray(pair, special_piece("Sequence", "A", 0));
    cJSON_AddItemToArray(pair, special_piece("SpecialToken", bos, 1));
    cJSON_AddItemToArray(pair, special_piece("Sequence", "B", 1));
    cJSON_AddItemToObject(tp, "single", single);
    cJSON_AddItemToObject(tp, "pair", pair);
    cJSON *st = cJSON_CreateObject(), *e = cJSON_CreateObject(), *ids = cJSON_CreateArray(),
          *toks = cJSON_CreateArray();
    cJSON_AddStringToObject(e, "id", bos);
    cJSON_AddItemToArray(ids, cJSON_CreateNumber(bos_id));
    cJSON_AddItemToArray(toks, cJSON_CreateString(bos));
    cJSON_AddItemToObject(e, "ids", ids);
    cJSON_AddItemToObject(e, "tokens", toks);
    cJSON_AddItemToObject(st, bos, e);
    cJSON_AddItemToObject(tp, "special_tokens", st);
    return sequence("processors", bl, tp);
}

static cJSON *added_token(int id, const char *content, int special, int with_id) {
    cJSON *o = cJSON_CreateObject();
    if (with_id) cJSON_AddNumberToObject(o, "id", id);
    cJSON_AddStringToObject(o, "content", content);
    cJSON_AddBoolToObject(o, "single_word", 0);
    cJSON_AddBoolToObject(o, "lstrip", 0);
    cJSON_AddBoolToObject(o, "rstrip", 0);
    cJSON_AddBoolToObject(o, "normalized", 0);
    cJSON_AddBoolToObject(o, "special", special);
    return o;
}

static int write_json(const char *dir, const char *name, const cJSON *root, dms_err *err) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return dms_errf(err, "%s: path too long", dir);
    char *text = dms_json_print(root);
    if (!text) return dms_errf(err, "%s: out of memory", path);
    int rc = dms_write_file_synced(path, text, strlen(text), err);
    free(text);
    return rc;
}

static int32_t id_of(const dms_gguf *g, const char *key, int n) {
    uint64_t u;
    if (dms_gguf_get_u64(g, key, &u) != 0 || u >= (uint64_t)n) return -1;
    return (int32_t)u;
}

int dms_tokenizer_export_gguf(const dms_gguf *g, const char *dir, int model_max_length, dms_err *err) {
    const char *path = g->file.path ? g->file.path : "(gguf)";
    char *model = dms_gguf_get_str(g, "tokenizer.ggml.model");
    char *pre = dms_gguf_get_str(g, "tokenizer.ggml.pre");
    char *tpl = dms_gguf_get_str(g, "tokenizer.chat_template");
    dms_gguf_str *strs = NULL;
    char **tok = NULL;
    int32_t *types = NULL;
    cJSON *root = NULL, *cfg = NULL;
    int rc = -1, n = 0;
    pre_style style;
    const char *pre_name = pre ? pre : "default";
    if (!model || strcmp(model, "gpt2")) {
        dms_errf(err, "%s: tokenizer.ggml.model '%s' cannot be exported (byte-level BPE 'gpt2' only)", path,
                 model ? model : "(none)");
        goto done;
    }
    if (pre_from_name(pre_name, &style) != 0) {
        dms_errf(err, "%s: tokenizer.ggml.pre '%s' cannot be exported (known: smollm, gpt2, default, llama-bpe, "
                      "llama3, qwen2, deepseek-r1-qwen)", path, pre_name);
        goto done;
    }
    const dms_gguf_kv *tk = dms_gguf_find_kv(g, "tokenizer.ggml.tokens");
    const dms_gguf_kv *mk = dms_gguf_find_kv(g, "tokenizer.ggml.merges");
    if (!tk || !mk || tk->type != GGUF_T_ARRAY || mk->type != GGUF_T_ARRAY || tk->arr_len == 0 ||
        tk->arr_len > 100000000) {
        dms_errf(err, "%s: missing or empty tokenizer.ggml.tokens / tokenizer.ggml.merges", path);
        goto done;
    }
    n = (int)tk->arr_len;
    const size_t nstr = tk->arr_len > mk->arr_len ? tk->arr_len : mk->arr_len;
    strs = malloc((nstr ? nstr : 1) * sizeof *strs);
    tok = calloc((size_t)n, sizeof *tok);
    types = calloc((size_t)n, sizeof *types);
    if (!strs || !tok || !types) {
        dms_errf(err, "%s: out of memory", path);
        goto done;
    }
    if (dms_gguf_array_strs(tk, strs, err) != 0) goto done;
    for (int i = 0; i < n; i++) {
        if (memchr(strs[i].ptr, '\0', strs[i].len)) {
            dms_errf(err, "%s: tokenizer.ggml.tokens[%d] contains a NUL byte", path, i);
            goto done;
        }
        tok[i] = strndup(strs[i].ptr, strs[i].len);
        if (!tok[i]) {
            dms_errf(err, "%s: out of memory", path);
            goto done;
        }
    }
    if (dms_gguf_token_types(g, n, types, err) < 0) goto done;
    const int32_t bos = id_of(g, "tokenizer.ggml.bos_token_id", n), eos = id_of(g, "tokenizer.ggml.eos_token_id", n);
    const int32_t unk = id_of(g, "tokenizer.ggml.unknown_token_id", n), pad = id_of(g, "tokenizer.ggml.padding_token_id", n);
    uint64_t ab;
    int add_bos = dms_gguf_get_u64(g, "tokenizer.ggml.add_bos_token", &ab) == 0 ? ab != 0 : style == PRE_LLAMA3;
    if (bos < 0) add_bos = 0;

    /* ---- tokenizer.json ---- */
    root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int i = 0; i < n; i++) /* control -> special, user-defined -> added (as our GGUF loader) */
        if (types[i] == 3 || types[i] == 4) cJSON_AddItemToArray(added, added_token(i, tok[i], types[i] == 3, 1));
    if (style == PRE_QWEN2) {
        cJSON *nfc = cJSON_CreateObject();
        cJSON_AddStringToObject(nfc, "type", "NFC");
        cJSON_AddItemToObject(root, "normalizer", nfc);
    } else {
        cJSON_AddNullToObject(root, "normalizer");
    }
    cJSON_AddItemToObject(root, "pre_tokenizer", pre_tokenizer(style));
    cJSON_AddItemToObject(root, "post_processor", post_processor(add_bos ? tok[bos] : NULL, bos));
    cJSON_AddItemToObject(root, "decoder", byte_level(1, 1, 1));
    cJSON *bpe = cJSON_CreateObject();
    cJSON_AddStringToObject(bpe, "type", "BPE");
    cJSON_AddNullToObject(bpe, "dropout");
    cJSON_AddNullToObject(bpe, "unk_token");
    cJSON_AddNullToObject(bpe, "continuing_subword_prefix");
    cJSON_AddNullToObject(bpe, "end_of_word_suffix");
    cJSON_AddBoolToObject(bpe, "fuse_unk", 0);
    cJSON_AddBoolToObject(bpe, "byte_fallback", 0);
    cJSON_AddBoolToObject(bpe, "ignore_merges", style == PRE_LLAMA3);
    cJSON *vocab = cJSON_AddObjectToObject(bpe, "vocab");
    /* every id in order; a string given twice appears twice, and the later id
     * wins in both our loader and `tokenizers` (as in the GGUF loader) */
    for (int i = 0; i < n; i++) cJSON_AddItemToObject(vocab, tok[i], cJSON_CreateNumber(i));
    cJSON *merges = cJSON_AddArrayToObject(bpe, "merges");
    if (dms_gguf_array_strs(mk, strs, err) != 0) goto done;
    for (uint64_t r = 0; r < mk->arr_len; r++) {
        const char *s = strs[r].ptr, *sp = memchr(s, ' ', strs[r].len);
        if (!sp || memchr(s, '\0', strs[r].len)) {
            dms_errf(err, "%s: tokenizer.ggml.merges[%llu] is not 'a b'", path, (unsigned long long)r);
            goto done;
        }
        char *a = strndup(s, (size_t)(sp - s)), *b = strndup(sp + 1, strs[r].len - (size_t)(sp - s) - 1);
        cJSON *pairv = cJSON_CreateArray();
        if (a && b && pairv) {
            cJSON_AddItemToArray(pairv, cJSON_CreateString(a));
            cJSON_AddItemToArray(pairv, cJSON_CreateString(b));
            cJSON_AddItemToArray(merges, pairv);
        }
        free(a);
        free(b);
        if (!a || !b || !pairv) {
            cJSON_Delete(pairv);
            dms_errf(err, "%s: out of memory", path);
            goto done;
        }
    }
    cJSON_AddItemToObject(root, "model", bpe);
    if (write_json(dir, "tokenizer.json", root, err) != 0) goto done;

    /* ---- tokenizer_config.json ---- */
    cfg = cJSON_CreateObject();
    cJSON_AddBoolToObject(cfg, "add_bos_token", add_bos);
    cJSON_AddBoolToObject(cfg, "add_eos_token", 0);
    cJSON *dec = cJSON_AddObjectToObject(cfg, "added_tokens_decoder");
    for (int i = 0; i < n; i++)
        if (types[i] == 3 || types[i] == 4) {
            char key[16];
            snprintf(key, sizeof key, "%d", i);
            cJSON_AddItemToObject(dec, key, added_token(i, tok[i], types[i] == 3, 0));
        }
    if (bos >= 0) cJSON_AddStringToObject(cfg, "bos_token", tok[bos]);
    else cJSON_AddNullToObject(cfg, "bos_token");
    if (eos >= 0) cJSON_AddStringToObject(cfg, "eos_token", tok[eos]);
    else cJSON_AddNullToObject(cfg, "eos_token");
    if (unk >= 0) cJSON_AddStringToObject(cfg, "unk_token", tok[unk]);
    if (pad >= 0) cJSON_AddStringToObject(cfg, "pad_token", tok[pad]);
    if (tpl) cJSON_AddStringToObject(cfg, "chat_template", tpl);
    cJSON_AddBoolToObject(cfg, "clean_up_tokenization_spaces", 0);
    cJSON_AddNumberToObject(cfg, "model_max_length", model_max_length > 0 ? model_max_length : 4096);
    cJSON_AddStringToObject(cfg, "tokenizer_class", "PreTrainedTokenizerFast");
    if (write_json(dir, "tokenizer_config.json", cfg, err) != 0) goto done;
    rc = 0;
done:
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    if (tok)
        for (int i = 0; i < n; i++) free(tok[i]);
    free(tok);
    free(types);
    free(strs);
    free(model);
    free(pre);
    free(tpl);
    return rc;
}
