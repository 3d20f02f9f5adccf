/* tokenizer.c - byte-level BPE (GPT-2 / Llama 3 / Qwen / SmolLM) loaded from
 * a Hugging Face tokenizer.json or from GGUF metadata: vocabulary and merge
 * hash maps, added/special token matching, byte-level mapping, BPE by merge
 * rank, decoding. Output matches `tokenizers` (see tests/test_tokenizer.c). */
#include "model/tokenizer.h"
#include "model/config.h" /* DMS_CONFIG_MAX_VOCAB */

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/mapped_file.h"

typedef struct {
    char *str;       /* vocabulary string (byte-level form), NUL-terminated */
    uint32_t len;
    uint32_t boff;   /* raw bytes: t->bytes + boff, blen long */
    uint32_t blen;
    uint8_t added, special, lstrip, rstrip;
} tok_entry;

typedef struct {
    uint64_t key;    /* left << 32 | right; UINT64_MAX = empty */
    uint32_t rank;
    int32_t new_id;
} merge_slot;

struct dms_tokenizer {
    int n_vocab;
    tok_entry *tok;
    char *bytes;                /* token_bytes storage */
    /* string -> id (open addressing over ids, -1 empty) */
    int32_t *vslots;
    size_t vcap;
    /* merges */
    merge_slot *mslots;
    size_t mcap, n_merges;
    int32_t *merge_lr;          /* 2 * n_merges: left, right ids per rank (hash) */
    /* added tokens, grouped by first byte and longest first */
    int32_t *added;
    size_t n_added;
    uint32_t added_start[257];
    int32_t byte_id[256];       /* id of the one-byte token for each byte */
    dms_pretok *pre;
    int ignore_merges;
    int32_t bos, eos, unk, pad;
    int add_bos;
    int32_t stop[8];
    int n_stop;
    char *chat_template;
    char *bos_str, *eos_str;    /* bos_token / eos_token for the chat template, NULL if none */
    dms_jinja *chat_jinja;      /* chat_template parsed once at load, or NULL */
    char *chat_err;             /* why chat_template did not parse (reported when rendering) */
    char desc[160];
    uint64_t hash;
};

/* ---- GPT-2 byte <-> unicode mapping ---- */

static char bl_utf8[256][3];
static uint8_t bl_len[256];
static int16_t bl_rev[324]; /* code point -> byte, -1 if none */
static pthread_once_t bl_once = PTHREAD_ONCE_INIT;

static void bl_build(void) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int cp = ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
                     ? b : 256 + n++;
        utf8proc_uint8_t buf[4];
        utf8proc_ssize_t l = utf8proc_encode_char(cp, buf);
        memcpy(bl_utf8[b], buf, (size_t)l);
        bl_len[b] = (uint8_t)l;
    }
    for (int i = 0; i < 324; i++) bl_rev[i] = -1;
    n = 0;
    for (int b = 0; b < 256; b++) {
        int cp = ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
                     ? b : 256 + n++;
        bl_rev[cp] = (int16_t)b;
    }
}

static void bl_init(void) { pthread_once(&bl_once, bl_build); }

/* ---- hashing helpers ---- */

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}
#define FNV_INIT 0xcbf29ce484222325ULL

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static int32_t vocab_find(const dms_tokenizer *t, const char *s, size_t len) {
    if (!t->vcap) return -1;
    size_t m = t->vcap - 1, i = (size_t)fnv1a(FNV_INIT, s, len) & m;
    for (;;) {
        int32_t id = t->vslots[i];
        if (id < 0) return -1;
        if (t->tok[id].len == len && memcmp(t->tok[id].str, s, len) == 0) return id;
        i = (i + 1) & m;
    }
}

/* Builds the string map; later ids win over earlier duplicates, as a
 * HashMap built in id order would. */
static int vocab_build(dms_tokenizer *t) {
    t->vcap = pow2_at_least((size_t)t->n_vocab * 2 + 1);
    t->vslots = malloc(t->vcap * sizeof *t->vslots);
    if (!t->vslots) return -1;
    memset(t->vslots, 0xff, t->vcap * sizeof *t->vslots);
    size_t m = t->vcap - 1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (!t->tok[id].str) continue;
        size_t i = (size_t)fnv1a(FNV_INIT, t->tok[id].str, t->tok[id].len) & m;
        for (;;) {
            int32_t o = t->vslots[i];
            if (o < 0 || (t->tok[o].len == t->tok[id].len &&
                          memcmp(t->tok[o].str, t->tok[id].str, t->tok[id].len) == 0)) {
                t->vslots[i] = id;
                break;
            }
            i = (i + 1) & m;
        }
    }
    return 0;
}

static const merge_slot *merge_find(const dms_tokenizer *t, int32_t l, int32_t r) {
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    size_t m = t->mcap - 1, i = (size_t)mix64(key) & m;
    for (;;) {
        const merge_slot *s = &t->mslots[i];
        if (s->key == UINT64_MAX) return NULL;
        if (s->key == key) return s;
        i = (i + 1) & m;
    }
}

/* ---- construction ---- */

static dms_tokenizer *tok_alloc(int n_vocab) {
    bl_init();
    dms_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->n_vocab = n_vocab;
    t->tok = calloc((size_t)n_vocab, sizeof *t->tok);
    t->pre = dms_pretok_new();
    t->bos = t->eos = t->unk = t->pad = -1;
    if (!t->tok || !t->pre) {
        dms_tokenizer_free(t);
        return NULL;
    }
    return t;
}

void dms_tokenizer_free(dms_tokenizer *t) {
    if (!t) return;
    if (t->tok)
        for (int i = 0; i < t->n_vocab; i++) free(t->tok[i].str);
    free(t->tok);
    free(t->bytes);
    free(t->vslots);
    free(t->mslots);
    free(t->merge_lr);
    free(t->added);
    dms_pretok_free(t->pre);
    free(t->chat_template);
    free(t->bos_str);
    free(t->eos_str);
    dms_jinja_free(t->chat_jinja);
    free(t->chat_err);
    free(t);
}

static int set_token(dms_tokenizer *t, int32_t id, const char *s, size_t len) {
    char *c = malloc(len + 1);
    if (!c) return -1;
    memcpy(c, s, len);
    c[len] = '\0';
    free(t->tok[id].str);
    t->tok[id].str = c;
    t->tok[id].len = (uint32_t)len;
    return 0;
}

/* Adds merge (l, r) with the given rank; its result must be in the vocab. */
static int merges_alloc(dms_tokenizer *t, size_t n) {
    t->mcap = pow2_at_least(n * 2 + 1);
    t->mslots = malloc(t->mcap * sizeof *t->mslots);
    t->merge_lr = malloc((n ? n : 1) * 2 * sizeof *t->merge_lr);
    if (!t->mslots || !t->merge_lr) return -1;
    for (size_t i = 0; i < t->mcap; i++) t->mslots[i].key = UINT64_MAX;
    return 0;
}

static int merge_add(dms_tokenizer *t, const char *path, size_t rank, const char *a, size_t la,
                     const char *b, size_t lb, dms_err *err) {
    int32_t l = vocab_find(t, a, la), r = vocab_find(t, b, lb);
    if (l < 0 || r < 0)
        return dms_errf(err, "%s: merge %zu '%.*s %.*s' uses a token not in the vocabulary", path,
                        rank, (int)la, a, (int)lb, b);
    char stackbuf[256], *cat = la + lb <= sizeof stackbuf ? stackbuf : malloc(la + lb);
    if (!cat) return dms_errf(err, "%s: out of memory", path);
    memcpy(cat, a, la);
    memcpy(cat + la, b, lb);
    int32_t nid = vocab_find(t, cat, la + lb);
    if (cat != stackbuf) free(cat);
    if (nid < 0)
        return dms_errf(err, "%s: merge %zu '%.*s %.*s' makes a token not in the vocabulary", path,
                        rank, (int)la, a, (int)lb, b);
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    size_t m = t->mcap - 1, i = (size_t)mix64(key) & m;
    while (t->mslots[i].key != UINT64_MAX && t->mslots[i].key != key) i = (i + 1) & m;
    t->mslots[i] = (merge_slot){key, (uint32_t)rank, nid}; /* a later duplicate wins */
    t->merge_lr[2 * t->n_merges] = l;
    t->merge_lr[2 * t->n_merges + 1] = r;
    t->n_merges++;
    return 0;
}

typedef struct { unsigned char first; uint32_t len; int32_t id; } added_key;

static int cmp_added(const void *pa, const void *pb) {
    const added_key *a = pa, *b = pb;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1; /* longest first */
    return (a->id > b->id) - (a->id < b->id);
}

static int is_stop_name(const char *s) {
    return !strcmp(s, "<|im_end|>") || !strcmp(s, "<|eot_id|>") || !strcmp(s, "<|end_of_text|>") ||
           !strcmp(s, "<|endoftext|>");
}

/* After vocab, merges, added flags and ids are set: byte tables, raw bytes
 * of every token, added-token index, stop list, hash, description. */
/* The chat template is parsed once, here; every render reuses it. One the
 * engine cannot parse keeps its message for the first render, so that the
 * model still loads (and runs --raw). */
static int parse_chat(dms_tokenizer *t, const char *path, dms_err *err) {
    if (!t->chat_template) return 0;
    dms_err e = {{0}};
    t->chat_jinja = dms_jinja_parse(t->chat_template, &e);
    if (!t->chat_jinja && !(t->chat_err = strdup(e.msg))) return dms_errf(err, "%s: out of memory", path);
    return 0;
}

static int finish(dms_tokenizer *t, const char *path, const char *pre_name, dms_err *err) {
    /* raw bytes per token, as tokenizers' ByteLevel decoder: if every char
     * of the token is in the byte map, the mapped bytes; else the string. */
    size_t total = 0;
    for (int i = 0; i < t->n_vocab; i++) total += t->tok[i].len;
    t->bytes = malloc(total ? total : 1);
    if (!t->bytes) return dms_errf(err, "%s: out of memory", path);
    size_t off = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        tok_entry *e = &t->tok[i];
        e->boff = (uint32_t)off;
        if (!e->str) continue;
        size_t k = 0, o = off;
        int ok = 1;
        while (k < e->len) {
            utf8proc_int32_t cp;
            utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)e->str + k,
                                                  (utf8proc_ssize_t)(e->len - k), &cp);
            if (l <= 0 || cp < 0 || cp >= 324 || bl_rev[cp] < 0) {
                ok = 0;
                break;
            }
            t->bytes[o++] = (char)bl_rev[cp];
            k += (size_t)l;
        }
        if (!ok) {
            memcpy(t->bytes + off, e->str, e->len);
            o = off + e->len;
        }
        e->blen = (uint32_t)(o - off);
        off = o;
    }
    for (int b = 0; b < 256; b++) t->byte_id[b] = vocab_find(t, bl_utf8[b], bl_len[b]);

    /* added tokens index */
    size_t na = 0;
    for (int i = 0; i < t->n_vocab; i++)
        if (t->tok[i].added && t->tok[i].len > 0) na++;
    t->added = malloc((na ? na : 1) * sizeof *t->added);
    added_key *keys = malloc((na ? na : 1) * sizeof *keys);
    if (!t->added || !keys) {
        free(keys);
        return dms_errf(err, "%s: out of memory", path);
    }
    t->n_added = 0;
    for (int i = 0; i < t->n_vocab; i++)
        if (t->tok[i].added && t->tok[i].len > 0)
            keys[t->n_added++] = (added_key){(unsigned char)t->tok[i].str[0], t->tok[i].len, i};
    qsort(keys, t->n_added, sizeof *keys, cmp_added);
    for (size_t i = 0; i < t->n_added; i++) t->added[i] = keys[i].id;
    free(keys);
    size_t j = 0;
    for (int b = 0; b <= 256; b++) {
        while (j < t->n_added && (unsigned char)t->tok[t->added[j]].str[0] < b) j++;
        t->added_start[b] = (uint32_t)j;
    }

    /* stop tokens */
    t->n_stop = 0;
    if (t->eos >= 0) t->stop[t->n_stop++] = t->eos;
    for (size_t i = 0; i < t->n_added && t->n_stop < 8; i++) {
        int32_t id = t->added[i];
        if (id != t->eos && is_stop_name(t->tok[id].str)) t->stop[t->n_stop++] = id;
    }

    /* hash: vocabulary (with added/special flags), merges, pre-tokenizer */
    uint64_t h = FNV_INIT;
    for (int i = 0; i < t->n_vocab; i++) {
        const tok_entry *e = &t->tok[i];
        if (e->str) h = fnv1a(h, e->str, e->len);
        unsigned char sep[2] = {0, (unsigned char)(e->added | (e->special << 1))};
        h = fnv1a(h, sep, 2);
    }
    for (size_t i = 0; i < t->n_merges; i++) {
        const tok_entry *a = &t->tok[t->merge_lr[2 * i]], *b = &t->tok[t->merge_lr[2 * i + 1]];
        h = fnv1a(h, a->str, a->len);
        h = fnv1a(h, " ", 1);
        h = fnv1a(h, b->str, b->len);
        h = fnv1a(h, "\n", 1);
    }
    const char *sig = dms_pretok_signature(t->pre);
    h = fnv1a(h, sig, strlen(sig));
    h = fnv1a(h, t->ignore_merges ? "I" : "M", 1);
    t->hash = h;
    snprintf(t->desc, sizeof t->desc, "byte-level BPE, %d tokens, pre=%s", t->n_vocab, pre_name);
    return 0;
}

/* ---- tokenizer.json ---- */

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jbool(const cJSON *o, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

/* "bos_token": "<s>" or {"content": "<s>", ...} */
static const char *jtoken(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) return jstr(v, "content");
    return NULL;
}

static int json_normalizer(dms_tokenizer *t, const cJSON *n, const char *path, dms_err *err) {
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = jstr(n, "type");
    if (!type) return dms_errf(err, "%s: normalizer without a type", path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(n, "normalizers"))
            if (json_normalizer(t, c, path, err)) return -1;
        return 0;
    }
    dms_norm_form f = !strcmp(type, "NFC") ? DMS_NORM_NFC : !strcmp(type, "NFD") ? DMS_NORM_NFD
                    : !strcmp(type, "NFKC") ? DMS_NORM_NFKC : !strcmp(type, "NFKD") ? DMS_NORM_NFKD
                    : 0;
    if (!f) return dms_errf(err, "%s: normalizer '%s' not supported (NFC/NFD/NFKC/NFKD only)", path, type);
    if (dms_pretok_add_norm(t->pre, f)) return dms_errf(err, "%s: out of memory", path);
    return 0;
}

static int json_pretok(dms_tokenizer *t, const cJSON *p, const char *path, int *saw_bytelevel,
                       dms_err *err) {
    if (!p || cJSON_IsNull(p)) return 0;
    const char *type = jstr(p, "type");
    if (!type) return dms_errf(err, "%s: pre_tokenizer without a type", path);
    if (*saw_bytelevel)
        return dms_errf(err, "%s: pre_tokenizer '%s' after ByteLevel not supported", path, type);
    if (!strcmp(type, "Sequence")) {
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(p, "pretokenizers"))
            if (json_pretok(t, c, path, saw_bytelevel, err)) return -1;
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) {
        *saw_bytelevel = 1;
        if (jbool(p, "add_prefix_space", 0) && dms_pretok_add_prefix_space(t->pre))
            return dms_errf(err, "%s: out of memory", path);
        if (jbool(p, "use_regex", 1))
            return dms_pretok_add_split(t->pre, DMS_REGEX_GPT2, 0, DMS_SPLIT_ISOLATED, 0, path, err);
        return 0;
    }
    if (!strcmp(type, "Digits"))
        return dms_pretok_add_split(t->pre, jbool(p, "individual_digits", 0) ? "\\p{N}" : "\\p{N}+", 0,
                                    DMS_SPLIT_ISOLATED, 0, path, err);
    if (!strcmp(type, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const char *re = jstr(pat, "Regex"), *lit = jstr(pat, "String");
        if (!re && !lit) return dms_errf(err, "%s: Split pre_tokenizer without a pattern", path);
        const char *b = jstr(p, "behavior");
        dms_split_behavior beh;
        if (!b) return dms_errf(err, "%s: Split pre_tokenizer without a behavior", path);
        else if (!strcmp(b, "Removed")) beh = DMS_SPLIT_REMOVED;
        else if (!strcmp(b, "Isolated")) beh = DMS_SPLIT_ISOLATED;
        else if (!strcmp(b, "MergedWithPrevious")) beh = DMS_SPLIT_MERGED_WITH_PREVIOUS;
        else if (!strcmp(b, "MergedWithNext")) beh = DMS_SPLIT_MERGED_WITH_NEXT;
        else if (!strcmp(b, "Contiguous")) beh = DMS_SPLIT_CONTIGUOUS;
        else return dms_errf(err, "%s: Split behavior '%s' not supported", path, b);
        return dms_pretok_add_split(t->pre, re ? re : lit, !re, beh, jbool(p, "invert", 0), path, err);
    }
    return dms_errf(err, "%s: pre_tokenizer '%s' not supported (byte-level BPE only)", path, type);
}

static int json_decoder_ok(const cJSON *d) {
    const char *type = jstr(d, "type");
    if (!type) return 0;
    if (!strcmp(type, "ByteLevel")) return 1;
    if (strcmp(type, "Sequence")) return 0;
    const cJSON *c;
    int n = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(d, "decoders")) {
        if (!json_decoder_ok(c)) return 0;
        n++;
    }
    return n > 0;
}

/* The special token a TemplateProcessing's single template starts with. */
static const char *template_bos(const cJSON *pp) {
    const char *type = jstr(pp, "type");
    if (!type) return NULL;
    if (!strcmp(type, "Sequence")) {
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(pp, "processors")) {
            const char *s = template_bos(c);
            if (s) return s;
        }
        return NULL;
    }
    if (strcmp(type, "TemplateProcessing")) return NULL;
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(pp, "single"), 0);
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(first, "SpecialToken");
    return sp ? jstr(sp, "id") : NULL;
}

static cJSON *parse_json_file(const char *path, dms_err *err) {
    size_t len;
    char *txt = dms_read_text_file(path, &len, err);
    if (!txt) return NULL;
    const char *ep = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(txt, len, &ep, 0);
    if (!j) {
        size_t at = ep ? (size_t)(ep - txt) : 0;
        dms_errf(err, "%s: invalid JSON near byte %zu", path, at);
    }
    free(txt);
    return j;
}

static int load_json(dms_tokenizer **out, const char *path, const char *cfg_path, dms_err *err) {
    cJSON *root = parse_json_file(path, err), *cfg = NULL;
    dms_tokenizer *t = NULL;
    int rc = -1;
    if (!root) return -1;
    if (cfg_path && !(cfg = parse_json_file(cfg_path, err))) goto done;

    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) {
        dms_errf(err, "%s: no model section", path);
        goto done;
    }
    const char *mtype = jstr(model, "type");
    if (mtype && strcmp(mtype, "BPE")) {
        dms_errf(err, "%s: model.type '%s' not supported (byte-level BPE only)", path, mtype);
        goto done;
    }
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
        dms_errf(err, "%s: model has no BPE vocab/merges", path);
        goto done;
    }
    if (jbool(model, "byte_fallback", 0)) {
        dms_errf(err, "%s: BPE byte_fallback not supported (byte-level BPE only)", path);
        goto done;
    }
    const char *csp = jstr(model, "continuing_subword_prefix"), *eow = jstr(model, "end_of_word_suffix");
    if ((csp && *csp) || (eow && *eow)) {
        dms_errf(err, "%s: BPE continuing_subword_prefix/end_of_word_suffix not supported", path);
        goto done;
    }
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    long max_id = -1;
    const cJSON *c;
    cJSON_ArrayForEach(c, vocab) {
        if (!cJSON_IsNumber(c) || c->valuedouble < 0 || c->valuedouble >= DMS_CONFIG_MAX_VOCAB) {
            dms_errf(err, "%s: vocab entry '%s' has a bad id (ids are integers 0 to %d)", path, c->string,
                     DMS_CONFIG_MAX_VOCAB - 1);
            goto done;
        }
        if (c->valueint > max_id) max_id = c->valueint;
    }
    cJSON_ArrayForEach(c, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= DMS_CONFIG_MAX_VOCAB || !jstr(c, "content")) {
            dms_errf(err, "%s: added_tokens entry without id/content", path);
            goto done;
        }
        if (id->valueint > max_id) max_id = id->valueint;
    }
    if (max_id < 0) {
        dms_errf(err, "%s: empty vocabulary", path);
        goto done;
    }
    if (!(t = tok_alloc((int)max_id + 1))) {
        dms_errf(err, "%s: out of memory", path);
        goto done;
    }
    cJSON_ArrayForEach(c, vocab) {
        if (set_token(t, c->valueint, c->string, strlen(c->string))) {
            dms_errf(err, "%s: out of memory", path);
            goto done;
        }
    }
    cJSON_ArrayForEach(c, added) {
        int id = cJSON_GetObjectItemCaseSensitive(c, "id")->valueint;
        const char *content = jstr(c, "content");
        if (set_token(t, id, content, strlen(content))) {
            dms_errf(err, "%s: out of memory", path);
            goto done;
        }
        t->tok[id].added = 1;
        t->tok[id].special = (uint8_t)jbool(c, "special", 0);
        t->tok[id].lstrip = (uint8_t)jbool(c, "lstrip", 0);
        t->tok[id].rstrip = (uint8_t)jbool(c, "rstrip", 0);
    }
    if (vocab_build(t) || merges_alloc(t, (size_t)cJSON_GetArraySize(merges))) {
        dms_errf(err, "%s: out of memory", path);
        goto done;
    }
    size_t rank = 0;
    cJSON_ArrayForEach(c, merges) {
        if (cJSON_IsString(c)) {
            const char *s = c->valuestring, *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                dms_errf(err, "%s: merge %zu '%s' is not 'a b'", path, rank, s);
                goto done;
            }
            if (merge_add(t, path, rank, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), err)) goto done;
        } else if (cJSON_IsArray(c) && cJSON_GetArraySize(c) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(c, 0)) && cJSON_IsString(cJSON_GetArrayItem(c, 1))) {
            const char *a = cJSON_GetArrayItem(c, 0)->valuestring, *b = cJSON_GetArrayItem(c, 1)->valuestring;
            if (merge_add(t, path, rank, a, strlen(a), b, strlen(b), err)) goto done;
        } else {
            dms_errf(err, "%s: merge %zu is neither 'a b' nor [a, b]", path, rank);
            goto done;
        }
        rank++;
    }
    t->ignore_merges = jbool(model, "ignore_merges", 0);

    if (json_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), path, err)) goto done;
    int saw_bl = 0;
    if (json_pretok(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), path, &saw_bl, err))
        goto done;
    if (!saw_bl) {
        dms_errf(err, "%s: pre_tokenizer has no ByteLevel step (byte-level BPE only)", path);
        goto done;
    }
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (!json_decoder_ok(dec)) {
        const char *dt = dec ? jstr(dec, "type") : NULL;
        dms_errf(err, "%s: decoder '%s' not supported (ByteLevel only)", path, dt ? dt : "null");
        goto done;
    }

    /* BOS / EOS / add_bos: tokenizer_config.json first, then the post-processor */
    const char *tpl_bos = template_bos(cJSON_GetObjectItemCaseSensitive(root, "post_processor"));
    const char *bos = cfg ? jtoken(cfg, "bos_token") : NULL;
    const char *eos = cfg ? jtoken(cfg, "eos_token") : NULL;
    if (!bos) bos = tpl_bos;
    if (bos) t->bos = vocab_find(t, bos, strlen(bos));
    if (eos) t->eos = vocab_find(t, eos, strlen(eos));
    const char *unk = jstr(model, "unk_token");
    if (unk) t->unk = vocab_find(t, unk, strlen(unk));
    const char *pad = cfg ? jtoken(cfg, "pad_token") : NULL;
    if (pad) t->pad = vocab_find(t, pad, strlen(pad));
    const cJSON *ab = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token") : NULL;
    if (cJSON_IsBool(ab)) t->add_bos = cJSON_IsTrue(ab) && t->bos >= 0;
    else if (tpl_bos) {
        int32_t id = vocab_find(t, tpl_bos, strlen(tpl_bos));
        t->add_bos = id >= 0;
        if (id >= 0) t->bos = id;
    }
    /* the chat template sees tokenizer_config.json's strings (transformers' special_tokens_map) */
    if ((bos && cfg && !(t->bos_str = strdup(bos))) || (eos && cfg && !(t->eos_str = strdup(eos)))) {
        dms_errf(err, "%s: out of memory", path);
        goto done;
    }
    if (cfg) {
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
        const char *tpl = cJSON_IsString(ct) ? ct->valuestring : NULL;
        if (cJSON_IsArray(ct)) { /* [{name, template}, ...]: the "default" one */
            cJSON_ArrayForEach(c, ct) {
                const char *nm = jstr(c, "name");
                if (nm && !strcmp(nm, "default")) tpl = jstr(c, "template");
            }
        }
        if (tpl && !(t->chat_template = strdup(tpl))) {
            dms_errf(err, "%s: out of memory", path);
            goto done;
        }
    }
    if (finish(t, path, dms_pretok_short_name(t->pre), err) || parse_chat(t, path, err)) goto done;
    *out = t;
    t = NULL;
    rc = 0;
done:
    dms_tokenizer_free(t);
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    return rc;
}

dms_tokenizer *dms_tokenizer_from_json(const char *tokenizer_json, const char *tokenizer_config,
                                       dms_err *err) {
    dms_tokenizer *t = NULL;
    if (load_json(&t, tokenizer_json, tokenizer_config, err)) return NULL;
    return t;
}

/* ---- GGUF ---- */

static const char *gguf_pre_regexes(const char *pre, const char **re2, int *llama3) {
    *re2 = NULL;
    *llama3 = 0;
    if (!strcmp(pre, "smollm")) {
        *re2 = DMS_REGEX_GPT2;
        return "\\p{N}";
    }
    if (!strcmp(pre, "gpt2") || !strcmp(pre, "gpt-2") || !strcmp(pre, "default")) return DMS_REGEX_GPT2;
    if (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3") || !strcmp(pre, "llama-v3")) {
        *llama3 = 1;
        return DMS_REGEX_LLAMA3;
    }
    if (!strcmp(pre, "qwen2") || !strcmp(pre, "deepseek-r1-qwen")) return DMS_REGEX_QWEN2;
    return NULL;
}

static int32_t gguf_id(const dms_gguf *g, const char *key, int n_vocab) {
    uint64_t u;
    if (dms_gguf_get_u64(g, key, &u) || u >= (uint64_t)n_vocab) return -1;
    return (int32_t)u;
}

dms_tokenizer *dms_tokenizer_from_gguf(const dms_gguf *g, dms_err *err) {
    const char *path = g->file.path ? g->file.path : "(gguf)";
    dms_tokenizer *t = NULL;
    dms_gguf_str *strs = NULL;
    char *model = dms_gguf_get_str(g, "tokenizer.ggml.model");
    char *pre = dms_gguf_get_str(g, "tokenizer.ggml.pre");
    const char *pre_name = pre ? pre : "default";
    if (!model) {
        dms_errf(err, "%s: no tokenizer.ggml.model metadata", path);
        goto fail;
    }
    if (strcmp(model, "gpt2")) {
        dms_errf(err, "%s: tokenizer.ggml.model '%s' not supported (byte-level BPE 'gpt2' only)", path,
                 model);
        goto fail;
    }
    const char *re2;
    int llama3;
    const char *re1 = gguf_pre_regexes(pre_name, &re2, &llama3);
    if (!re1) {
        dms_errf(err, "%s: tokenizer.ggml.pre '%s' not supported (known: smollm, gpt2, default, "
                      "llama-bpe, llama3, qwen2)", path, pre_name);
        goto fail;
    }
    const dms_gguf_kv *tk = dms_gguf_find_kv(g, "tokenizer.ggml.tokens");
    const dms_gguf_kv *mk = dms_gguf_find_kv(g, "tokenizer.ggml.merges");
    if (!tk || !mk || tk->type != GGUF_T_ARRAY || mk->type != GGUF_T_ARRAY) {
        dms_errf(err, "%s: missing tokenizer.ggml.tokens or tokenizer.ggml.merges", path);
        goto fail;
    }
    if (tk->arr_len == 0 || tk->arr_len > DMS_CONFIG_MAX_VOCAB) {
        dms_errf(err, "%s: tokenizer.ggml.tokens has %llu entries", path,
                 (unsigned long long)tk->arr_len);
        goto fail;
    }
    int n = (int)tk->arr_len;
    if (!(t = tok_alloc(n))) {
        dms_errf(err, "%s: out of memory", path);
        goto fail;
    }
    size_t nstr = tk->arr_len > mk->arr_len ? tk->arr_len : mk->arr_len;
    if (!(strs = malloc((nstr ? nstr : 1) * sizeof *strs))) {
        dms_errf(err, "%s: out of memory", path);
        goto fail;
    }
    if (dms_gguf_array_strs(tk, strs, err)) goto fail;
    for (int i = 0; i < n; i++)
        if (set_token(t, i, strs[i].ptr, strs[i].len)) {
            dms_errf(err, "%s: out of memory", path);
            goto fail;
        }
    int32_t *types = malloc(sizeof(int32_t) * (size_t)n);
    const int have_types = types ? dms_gguf_token_types(g, n, types, err) : dms_errf(err, "%s: out of memory", path);
    for (int i = 0; have_types > 0 && i < n; i++)
        if (types[i] == 3 || types[i] == 4) { /* control -> special, user-defined -> added */
            t->tok[i].added = 1;
            t->tok[i].special = types[i] == 3;
        }
    free(types);
    if (have_types < 0) goto fail;
    if (vocab_build(t) || merges_alloc(t, mk->arr_len)) {
        dms_errf(err, "%s: out of memory", path);
        goto fail;
    }
    if (dms_gguf_array_strs(mk, strs, err)) goto fail;
    for (size_t r = 0; r < mk->arr_len; r++) {
        const char *s = strs[r].ptr, *sp = memchr(s, ' ', strs[r].len);
        if (!sp) {
            dms_errf(err, "%s: tokenizer.ggml.merges[%zu] is not 'a b'", path, r);
            goto fail;
        }
        size_t la = (size_t)(sp - s);
        if (merge_add(t, path, r, s, la, sp + 1, strs[r].len - la - 1, err)) goto fail;
    }
    if (!strcmp(pre_name, "qwen2") || !strcmp(pre_name, "deepseek-r1-qwen")) {
        if (dms_pretok_add_norm(t->pre, DMS_NORM_NFC)) {
            dms_errf(err, "%s: out of memory", path);
            goto fail;
        }
    }
    if (dms_pretok_add_split(t->pre, re1, 0, DMS_SPLIT_ISOLATED, 0, path, err)) goto fail;
    if (re2 && dms_pretok_add_split(t->pre, re2, 0, DMS_SPLIT_ISOLATED, 0, path, err)) goto fail;
    t->ignore_merges = llama3;
    t->bos = gguf_id(g, "tokenizer.ggml.bos_token_id", n);
    t->eos = gguf_id(g, "tokenizer.ggml.eos_token_id", n);
    t->unk = gguf_id(g, "tokenizer.ggml.unknown_token_id", n);
    t->pad = gguf_id(g, "tokenizer.ggml.padding_token_id", n);
    uint64_t ab;
    t->add_bos = dms_gguf_get_u64(g, "tokenizer.ggml.add_bos_token", &ab) == 0 ? ab != 0 : llama3;
    if (t->bos < 0) t->add_bos = 0;
    t->chat_template = dms_gguf_get_str(g, "tokenizer.chat_template");
    if (finish(t, path, pre_name, err) || parse_chat(t, path, err)) goto fail;
    /* the chat template's bos_token / eos_token: the tokens' text */
    for (int k = 0; k < 2; k++) {
        int32_t id = k ? t->eos : t->bos;
        size_t bl;
        const char *b = id >= 0 ? dms_tokenizer_token_bytes(t, id, &bl) : NULL;
        char **dst = k ? &t->eos_str : &t->bos_str;
        if (b && !(*dst = strndup(b, bl))) {
            dms_errf(err, "%s: out of memory", path);
            goto fail;
        }
    }
    free(strs);
    free(model);
    free(pre);
    return t;
fail:
    free(strs);
    free(model);
    free(pre);
    dms_tokenizer_free(t);
    return NULL;
}

/* ---- encoding ---- */

typedef struct {
    int32_t *v;
    size_t n, cap;
} idvec;

static int idpush(idvec *v, int32_t id) {
    if (v->n == v->cap) {
        size_t nc = v->cap ? 2 * v->cap : 256;
        int32_t *p = realloc(v->v, nc * sizeof *p);
        if (!p) return -1;
        v->v = p;
        v->cap = nc;
    }
    v->v[v->n++] = id;
    return 0;
}

typedef struct { int32_t id, prev, next; } sym;
typedef struct { uint32_t rank, pos; int32_t new_id; } hitem;

static int hless(const hitem *a, const hitem *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void hpush(hitem *h, size_t *n, hitem x) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hless(&x, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static hitem hpop(hitem *h, size_t *n) {
    hitem top = h[0], x = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && hless(&h[c + 1], &h[c])) c++;
        if (!hless(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = x;
    return top;
}

/* per-encode scratch: BPE buffers and a word cache */
typedef struct {
    sym *syms;
    hitem *heap;
    size_t cap;        /* of syms; heap holds up to 3*cap */
    char *mapped;
    size_t mapped_cap;
    /* cache: open addressing over entries */
    struct centry { uint64_t h; uint32_t koff, klen, ioff, ilen; } *ce;
    size_t ccap, cn;
    char *keys;
    size_t klen, kcap;
    int32_t *cids;
    size_t cidn, cidcap;
    dms_pretok_out pieces;
} enc_scratch;

static void enc_scratch_free(enc_scratch *s) {
    free(s->syms);
    free(s->heap);
    free(s->mapped);
    free(s->ce);
    free(s->keys);
    free(s->cids);
    dms_pretok_out_free(&s->pieces);
}

static int grow(void **p, size_t *cap, size_t need, size_t elt) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *n = realloc(*p, nc * elt);
    if (!n) return -1;
    *p = n;
    *cap = nc;
    return 0;
}

/* BPE of one pre-token (raw bytes), appending ids. */
static int bpe_word(const dms_tokenizer *t, enc_scratch *s, const unsigned char *w, size_t n, idvec *out) {
    if (t->ignore_merges) {
        size_t need = n * 2;
        if (grow((void **)&s->mapped, &s->mapped_cap, need, 1)) return -1;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(s->mapped + k, bl_utf8[w[i]], bl_len[w[i]]);
            k += bl_len[w[i]];
        }
        int32_t id = vocab_find(t, s->mapped, k);
        if (id >= 0) return idpush(out, id);
    }
    if (n == 1) return t->byte_id[w[0]] >= 0 ? idpush(out, t->byte_id[w[0]]) : 0;
    if (n > s->cap) {
        size_t nc = s->cap ? s->cap : 64;
        while (nc < n) nc *= 2;
        sym *ns = realloc(s->syms, nc * sizeof *ns);
        if (!ns) return -1;
        s->syms = ns;
        hitem *nh = realloc(s->heap, 3 * nc * sizeof *nh); /* m-1 pairs + 2 per merge */
        if (!nh) return -1;
        s->heap = nh;
        s->cap = nc;
    }
    sym *sy = s->syms;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[w[i]];
        if (id < 0) continue; /* not in the vocabulary and no unk: dropped, as tokenizers does */
        sy[m] = (sym){id, (int32_t)m - 1, (int32_t)m + 1};
        m++;
    }
    if (m == 0) return 0;
    sy[m - 1].next = -1;
    size_t hn = 0;
    for (size_t i = 0; i + 1 < m; i++) {
        const merge_slot *ms = merge_find(t, sy[i].id, sy[i + 1].id);
        if (ms) hpush(s->heap, &hn, (hitem){ms->rank, (uint32_t)i, ms->new_id});
    }
    while (hn > 0) {
        hitem top = hpop(s->heap, &hn);
        sym *cur = &sy[top.pos];
        if (cur->id < 0 || cur->next < 0) continue;
        sym *right = &sy[cur->next];
        const merge_slot *ms = merge_find(t, cur->id, right->id);
        if (!ms || ms->new_id != top.new_id) continue; /* stale entry */
        cur->id = top.new_id;
        right->id = -1;
        cur->next = right->next;
        if (cur->next >= 0) sy[cur->next].prev = (int32_t)top.pos;
        if (cur->prev >= 0) {
            const merge_slot *p = merge_find(t, sy[cur->prev].id, cur->id);
            if (p) hpush(s->heap, &hn, (hitem){p->rank, (uint32_t)cur->prev, p->new_id});
        }
        if (cur->next >= 0) {
            const merge_slot *p = merge_find(t, cur->id, sy[cur->next].id);
            if (p) hpush(s->heap, &hn, (hitem){p->rank, top.pos, p->new_id});
        }
    }
    for (int32_t i = 0; i >= 0; i = sy[i].next)
        if (idpush(out, sy[i].id)) return -1;
    return 0;
}

#define CACHE_MAX_WORD 64
#define CACHE_MAX_ENTRIES (1u << 18)

static int bpe_cached(const dms_tokenizer *t, enc_scratch *s, const unsigned char *w, size_t n, idvec *out) {
    if (n > CACHE_MAX_WORD || n == 1) return bpe_word(t, s, w, n, out);
    if (s->cn * 2 >= s->ccap) {
        if (s->ccap >= 2 * CACHE_MAX_ENTRIES) { /* full: start over */
            memset(s->ce, 0, s->ccap * sizeof *s->ce);
            s->cn = s->klen = s->cidn = 0;
        } else {
            size_t nc = s->ccap ? 2 * s->ccap : 4096;
            struct centry *ne = calloc(nc, sizeof *ne);
            if (!ne) return -1;
            for (size_t i = 0; i < s->ccap; i++) {
                if (!s->ce[i].klen) continue;
                size_t j = (size_t)s->ce[i].h & (nc - 1);
                while (ne[j].klen) j = (j + 1) & (nc - 1);
                ne[j] = s->ce[i];
            }
            free(s->ce);
            s->ce = ne;
            s->ccap = nc;
        }
    }
    uint64_t h = fnv1a(FNV_INIT, w, n);
    size_t j = (size_t)h & (s->ccap - 1);
    while (s->ce[j].klen) {
        const struct centry *e = &s->ce[j];
        if (e->h == h && e->klen == n && memcmp(s->keys + e->koff, w, n) == 0) {
            for (uint32_t k = 0; k < e->ilen; k++)
                if (idpush(out, s->cids[e->ioff + k])) return -1;
            return 0;
        }
        j = (j + 1) & (s->ccap - 1);
    }
    size_t before = out->n;
    if (bpe_word(t, s, w, n, out)) return -1;
    size_t ni = out->n - before;
    if (grow((void **)&s->keys, &s->kcap, s->klen + n, 1) ||
        grow((void **)&s->cids, &s->cidcap, s->cidn + ni, sizeof(int32_t)))
        return -1;
    memcpy(s->keys + s->klen, w, n);
    if (ni) /* a word of bytes the vocabulary lacks gives no ids (and cids may not exist yet) */
        memcpy(s->cids + s->cidn, out->v + before, ni * sizeof(int32_t));
    s->ce[j] = (struct centry){h, (uint32_t)s->klen, (uint32_t)n, (uint32_t)s->cidn, (uint32_t)ni};
    s->klen += n;
    s->cidn += ni;
    s->cn++;
    return 0;
}

static int encode_segment(const dms_tokenizer *t, enc_scratch *s, const char *p, size_t n, idvec *out,
                          dms_err *err) {
    if (n == 0) return 0;
    if (dms_pretok_run(t->pre, p, n, &s->pieces, err)) return -1;
    for (size_t i = 0; i < s->pieces.n; i++)
        if (bpe_cached(t, s, (const unsigned char *)s->pieces.pieces[i].ptr, s->pieces.pieces[i].len, out))
            return dms_errf(err, "tokenizer: out of memory");
    return 0;
}

/* Rust char::is_whitespace (the White_Space property). */
static int is_ws_cp(int32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

static size_t ws_forward(const char *s, size_t pos, size_t len) {
    while (pos < len) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s + pos, (utf8proc_ssize_t)(len - pos), &cp);
        if (l <= 0 || !is_ws_cp(cp)) break;
        pos += (size_t)l;
    }
    return pos;
}

static size_t ws_backward(const char *s, size_t pos, size_t floor) {
    while (pos > floor) {
        size_t st = pos - 1;
        while (st > floor && ((unsigned char)s[st] & 0xC0) == 0x80) st--;
        utf8proc_int32_t cp;
        utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s + st, (utf8proc_ssize_t)(pos - st), &cp);
        if (l <= 0 || !is_ws_cp(cp)) break;
        pos = st;
    }
    return pos;
}

int dms_tokenizer_encode(const dms_tokenizer *t, const char *text, size_t len, int parse_special,
                         int32_t **ids, size_t *n_ids, dms_err *err) {
    *ids = NULL;
    *n_ids = 0;
    /* validate UTF-8 once; everything downstream assumes it */
    for (size_t i = 0; i < len;) {
        if ((unsigned char)text[i] < 0x80) {
            i++;
            continue;
        }
        utf8proc_int32_t cp;
        utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)text + i, (utf8proc_ssize_t)(len - i), &cp);
        if (l <= 0) return dms_errf(err, "tokenizer: invalid UTF-8 at byte %zu of the input", i);
        i += (size_t)l;
    }
    enc_scratch s;
    memset(&s, 0, sizeof s);
    idvec out = {0};
    size_t seg = 0, pos = 0;
    while (pos < len) {
        unsigned char c = (unsigned char)text[pos];
        int32_t hit = -1;
        for (uint32_t k = t->added_start[c]; k < t->added_start[c + 1]; k++) {
            const tok_entry *e = &t->tok[t->added[k]];
            if (e->special && !parse_special) continue;
            if (e->len <= len - pos && memcmp(text + pos, e->str, e->len) == 0) {
                hit = t->added[k]; /* longest first */
                break;
            }
        }
        if (hit < 0) {
            pos++;
            continue;
        }
        const tok_entry *e = &t->tok[hit];
        size_t seg_end = e->lstrip ? ws_backward(text, pos, seg) : pos;
        if (encode_segment(t, &s, text + seg, seg_end - seg, &out, err)) goto fail;
        if (idpush(&out, hit)) goto oom;
        pos += e->len;
        if (e->rstrip) pos = ws_forward(text, pos, len);
        seg = pos;
    }
    if (encode_segment(t, &s, text + seg, len - seg, &out, err)) goto fail;
    enc_scratch_free(&s);
    if (!out.v) out.v = malloc(sizeof(int32_t)); /* a non-NULL result even when empty */
    if (!out.v) return dms_errf(err, "tokenizer: out of memory");
    *ids = out.v;
    *n_ids = out.n;
    return 0;
oom:
    dms_errf(err, "tokenizer: out of memory");
fail:
    enc_scratch_free(&s);
    free(out.v);
    return -1;
}

/* ---- decoding ---- */

char *dms_tokenizer_decode(const dms_tokenizer *t, const int32_t *ids, size_t n, int skip_special) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < t->n_vocab) total += t->tok[ids[i]].blen;
    char *s = malloc(total + 1), *p = s;
    if (!s) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) continue;
        const tok_entry *e = &t->tok[ids[i]];
        if (skip_special && e->special) continue;
        memcpy(p, t->bytes + e->boff, e->blen);
        p += e->blen;
    }
    *p = '\0';
    return s;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 with *bad = the
 * length of the maximal invalid subpart to replace by one U+FFFD. */
static size_t utf8_valid_at(const unsigned char *s, size_t n, size_t *bad) {
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *bad = 1;
        return 0;
    }
    size_t i = 1;
    for (; i <= need; i++) {
        if (i >= n) break;
        unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (s[i] < l || s[i] > h) break;
    }
    if (i > need) return need + 1;
    *bad = i;
    return 0;
}

char *dms_tokenizer_decode_lossy(const dms_tokenizer *t, const int32_t *ids, size_t n, int skip_special) {
    char *raw = dms_tokenizer_decode(t, ids, n, skip_special);
    if (!raw) return NULL;
    size_t len = strlen(raw); /* byte 0 is token 'Ā'; a NUL in the output ends it here too */
    char *s = malloc(len * 3 + 1), *p = s;
    if (!s) {
        free(raw);
        return NULL;
    }
    const unsigned char *u = (const unsigned char *)raw;
    for (size_t i = 0; i < len;) {
        size_t bad = 0, ok = utf8_valid_at(u + i, len - i, &bad);
        if (ok) {
            memcpy(p, u + i, ok);
            p += ok;
            i += ok;
        } else {
            memcpy(p, "\xEF\xBF\xBD", 3);
            p += 3;
            i += bad;
        }
    }
    *p = '\0';
    free(raw);
    return s;
}

/* ---- accessors ---- */

const char *dms_tokenizer_token_bytes(const dms_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab || !t->tok[id].str) {
        *len = 0;
        return "";
    }
    *len = t->tok[id].blen;
    return t->bytes + t->tok[id].boff;
}

const char *dms_tokenizer_token_str(const dms_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab || !t->tok[id].str) return "";
    return t->tok[id].str;
}

int32_t dms_tokenizer_lookup(const dms_tokenizer *t, const char *s) { return vocab_find(t, s, strlen(s)); }
int dms_tokenizer_vocab_size(const dms_tokenizer *t) { return t->n_vocab; }
int32_t dms_tokenizer_bos(const dms_tokenizer *t) { return t->bos; }
int32_t dms_tokenizer_eos(const dms_tokenizer *t) { return t->eos; }

int dms_tokenizer_is_stop(const dms_tokenizer *t, int32_t id) {
    for (int i = 0; i < t->n_stop; i++)
        if (t->stop[i] == id) return 1;
    return 0;
}

int dms_tokenizer_is_special(const dms_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && t->tok[id].special;
}

int dms_tokenizer_add_bos(const dms_tokenizer *t) { return t->add_bos; }
const char *dms_tokenizer_chat_template(const dms_tokenizer *t) { return t->chat_template; }
const char *dms_tokenizer_bos_token(const dms_tokenizer *t) { return t->bos_str; }
const dms_jinja *dms_tokenizer_chat_jinja(const dms_tokenizer *t, const char **parse_err) {
    if (parse_err) *parse_err = t->chat_err;
    return t->chat_jinja;
}
const char *dms_tokenizer_eos_token(const dms_tokenizer *t) { return t->eos_str; }
const char *dms_tokenizer_describe(const dms_tokenizer *t) { return t->desc; }
uint64_t dms_tokenizer_hash(const dms_tokenizer *t) { return t->hash; }

int dms_tokenizer_prepend_bos(const dms_tokenizer *t, int32_t **ids, size_t *n, dms_err *err) {
    const int32_t bos = dms_tokenizer_bos(t);
    if (!dms_tokenizer_add_bos(t) || bos < 0 || (*n > 0 && (*ids)[0] == bos)) return 0;
    int32_t *with = malloc(sizeof(int32_t) * (*n + 1));
    if (!with) return dms_errf(err, "out of memory");
    with[0] = bos;
    if (*n) memcpy(with + 1, *ids, sizeof(int32_t) * *n);
    free(*ids);
    *ids = with;
    (*n)++;
    return 0;
}
