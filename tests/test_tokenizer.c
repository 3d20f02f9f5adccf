/* test_tokenizer.c - the byte-level BPE tokenizer and chat rendering against
 * ground truth from Hugging Face `tokenizers`/`transformers`
 * (tests/reference/make_tokenizer_fixtures.py): SmolLM2 through its GGUF,
 * tiny Llama 3 / Qwen2 style tokenizers through tokenizer.json. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/mapped_file.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "tests/check.h"

#define FIX "tests/fixtures/tokenizer"

static cJSON *load_json(const char *path) {
    dms_err err;
    size_t len;
    char *txt = dms_read_text_file(path, &len, &err);
    if (!txt) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(txt, len);
    free(txt);
    if (!j) fprintf(stderr, "%s: invalid JSON\n", path);
    return j;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int ids_equal(const int32_t *ids, size_t n, const cJSON *arr) {
    if ((size_t)cJSON_GetArraySize(arr) != n) return 0;
    size_t i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, arr) {
        if (ids[i++] != c->valueint) return 0;
    }
    return 1;
}

static int32_t *json_ids(const cJSON *arr, size_t *n) {
    *n = (size_t)cJSON_GetArraySize(arr);
    int32_t *v = malloc((*n + 1) * sizeof *v);
    size_t i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, arr) v[i++] = c->valueint;
    return v;
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fputc('\n', stderr);
}

/* ids, decodes, plain-special encodes, lossy decodes, token_bytes */
static void check_cases(const dms_tokenizer *t, const cJSON *exp, const char *name) {
    dms_err err;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(exp, "cases")) {
        const char *text = jstr(c, "text");
        int32_t *ids;
        size_t n;
        int rc = dms_tokenizer_encode(t, text, strlen(text), 1, &ids, &n, &err);
        CHECK_MSG(rc == 0, "%s: %s", name, err.msg);
        if (rc) continue;
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "ids");
        int ok = ids_equal(ids, n, want);
        CHECK_MSG(ok, "%s: ids differ for \"%s\"", name, text);
        if (!ok) {
            size_t wn;
            int32_t *w = json_ids(want, &wn);
            print_ids("got ", ids, n);
            print_ids("want", w, wn);
            free(w);
        }
        char *d = dms_tokenizer_decode(t, ids, n, 0);
        CHECK_MSG(d && !strcmp(d, jstr(c, "decode")), "%s: decode \"%s\" vs \"%s\"", name, d,
                  jstr(c, "decode"));
        char *ds = dms_tokenizer_decode(t, ids, n, 1);
        CHECK_MSG(ds && !strcmp(ds, jstr(c, "decode_skip")), "%s: decode(skip) \"%s\" vs \"%s\"", name,
                  ds, jstr(c, "decode_skip"));
        /* token_bytes concatenated == decode; token_str round-trips through lookup */
        size_t tot = 0;
        for (size_t i = 0; i < n; i++) {
            size_t bl;
            dms_tokenizer_token_bytes(t, ids[i], &bl);
            tot += bl;
        }
        char *cat = malloc(tot + 1), *p = cat;
        for (size_t i = 0; i < n; i++) {
            size_t bl;
            const char *b = dms_tokenizer_token_bytes(t, ids[i], &bl);
            memcpy(p, b, bl);
            p += bl;
            CHECK(dms_tokenizer_lookup(t, dms_tokenizer_token_str(t, ids[i])) == ids[i]);
        }
        *p = '\0';
        CHECK_MSG(d && !strcmp(cat, d), "%s: token_bytes concatenation differs from decode", name);
        free(cat);
        free(d);
        free(ds);
        free(ids);
    }
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(exp, "plain_special")) {
        const char *text = jstr(c, "text");
        int32_t *ids;
        size_t n;
        int rc = dms_tokenizer_encode(t, text, strlen(text), 0, &ids, &n, &err);
        CHECK_MSG(rc == 0, "%s: %s", name, err.msg);
        if (rc) continue;
        CHECK_MSG(ids_equal(ids, n, cJSON_GetObjectItemCaseSensitive(c, "ids")),
                  "%s: parse_special=0 ids differ for \"%s\"", name, text);
        free(ids);
    }
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(exp, "lossy")) {
        size_t n;
        int32_t *ids = json_ids(cJSON_GetObjectItemCaseSensitive(c, "ids"), &n);
        char *d = dms_tokenizer_decode_lossy(t, ids, n, 1);
        CHECK_MSG(d && !strcmp(d, jstr(c, "decode")), "%s: lossy decode \"%s\" vs \"%s\"", name, d,
                  jstr(c, "decode"));
        free(d);
        free(ids);
    }
}

static void check_chat(const dms_tokenizer *t, const cJSON *exp, const char *tpl, const char *name) {
    dms_err err;
    const cJSON *c;
    const char *plain = jstr(exp, "chat_plain_template");
    int n_cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(exp, "chat")) {
        const char *which = jstr(c, "template");
        const char *src = which && !strcmp(which, "plain") ? plain : tpl;
        const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(c, "messages");
        size_t n = (size_t)cJSON_GetArraySize(msgs), i = 0;
        dms_chat_msg m[8];
        const cJSON *mm;
        cJSON_ArrayForEach(mm, msgs) m[i++] =
            (dms_chat_msg){jstr(mm, "role"), jstr(mm, "content"), jstr(mm, "reasoning_content")};
        int gen = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "add_generation_prompt"));
        /* the tokenizer's own bos_token / eos_token, as apply_chat_template passes them */
        dms_chat_opts o;
        dms_chat_opts_default(&o);
        o.add_generation_prompt = gen;
        o.bos_token = dms_tokenizer_bos_token(t);
        o.eos_token = dms_tokenizer_eos_token(t);
        char *r = dms_chat_render_str(src, m, n, &o, &err);
        CHECK_MSG(r != NULL, "%s: %s", name, err.msg);
        if (!r) continue;
        const char *want = jstr(c, "rendered"); /* transformers' text: Llama 3's starts with bos_token */
        CHECK_MSG(!strcmp(r, want), "%s: chat render\n got: \"%s\"\nwant: \"%s\"", name, r, want);
        /* ids: encode(render, parse_special), BOS prepended only when missing ==
         * apply_chat_template(tokenize=True) (which encodes without adding BOS) */
        int32_t *ids;
        size_t nid;
        if (dms_tokenizer_encode(t, r, strlen(r), 1, &ids, &nid, &err) == 0 &&
            dms_tokenizer_prepend_bos(t, &ids, &nid, &err) == 0) {
            CHECK_MSG(ids_equal(ids, nid, cJSON_GetObjectItemCaseSensitive(c, "ids")),
                      "%s: chat ids differ from apply_chat_template(tokenize=True)", name);
            free(ids);
        } else {
            CHECK_MSG(0, "%s: %s", name, err.msg);
        }
        free(r);
        n_cases++;
    }
    CHECK_MSG(n_cases >= 4, "%s: only %d chat cases", name, n_cases);
}

static void check_stop(const dms_tokenizer *t, const char *const *stops, int n_stops, const char *name) {
    for (int i = 0; i < n_stops; i++) {
        int32_t id = dms_tokenizer_lookup(t, stops[i]);
        CHECK_MSG(id >= 0 && dms_tokenizer_is_stop(t, id), "%s: %s should stop", name, stops[i]);
        CHECK(dms_tokenizer_is_special(t, id));
    }
    int32_t a = dms_tokenizer_lookup(t, "a");
    CHECK_MSG(a >= 0 && !dms_tokenizer_is_stop(t, a), "%s: 'a' is not a stop token", name);
}

/* ~1 MB of mixed text must encode well under a second. */
static void check_speed(const dms_tokenizer *t, const cJSON *exp, const char *name) {
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap + 4096);
    const cJSON *c;
    unsigned k = 0;
    while (len < cap) {
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(exp, "cases")) {
            const char *s = jstr(c, "decode"); /* decode is a fixed point of decode(encode()) */
            size_t l = strlen(s);
            if (len + l + 32 > cap + 4096) break;
            memcpy(buf + len, s, l);
            len += l;
            len += (size_t)snprintf(buf + len, 32, " word%u %u\n", k * 7919u % 5000u, k);
            k++;
        }
    }
    buf[len] = '\0';
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int32_t *ids;
    size_t n;
    dms_err err;
    int rc = dms_tokenizer_encode(t, buf, len, 1, &ids, &n, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    CHECK_MSG(rc == 0, "%s: %s", name, err.msg);
    printf("%s: encoded %.2f MB into %zu tokens in %.3f s\n", name, (double)len / 1e6, n, s);
    if (!getenv("DMS_TEST_NO_TIMING")) CHECK_MSG(s < 1.0, "%s: 1 MB took %.3f s", name, s);
    if (rc == 0) {
        char *d = dms_tokenizer_decode(t, ids, n, 0);
        CHECK_MSG(d && !strcmp(d, buf), "%s: 1 MB round trip differs", name);
        free(d);
        free(ids);
    }
    free(buf);
}

static void test_smollm2(void) {
    const char *path = getenv("DMS_DEFAULT_GGUF");
    if (!path) path = "models/default.gguf";
    if (access(path, R_OK) != 0) {
        CHECK_MSG(0, "%s missing: run the setup (mkdir -p models && ln -sf <SmolLM2-135M-Instruct.Q4_1.gguf> "
                     "models/default.gguf, or set DMS_DEFAULT_GGUF)", path);
        return;
    }
    dms_gguf g;
    dms_err err;
    if (dms_gguf_open(&g, path, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    dms_tokenizer *t = dms_tokenizer_from_gguf(&g, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    cJSON *exp = load_json(FIX "/smollm2_expected.json");
    CHECK(exp != NULL);
    if (t && exp) {
        CHECK(dms_tokenizer_vocab_size(t) == 49152);
        CHECK_STR(dms_tokenizer_describe(t), "byte-level BPE, 49152 tokens, pre=smollm");
        CHECK(dms_tokenizer_bos(t) == dms_tokenizer_lookup(t, jstr(exp, "bos")));
        CHECK(dms_tokenizer_eos(t) == dms_tokenizer_lookup(t, jstr(exp, "eos")));
        CHECK(dms_tokenizer_add_bos(t) == 0);
        CHECK(dms_tokenizer_chat_template(t) && !strcmp(dms_tokenizer_chat_template(t), jstr(exp, "chat_template")));
        CHECK(dms_chat_detect(dms_tokenizer_chat_template(t)) == DMS_CHAT_CHATML);
        /* the default system prompt comes from running the template */
        dms_chat_msg um = {"user", "hi", NULL};
        char *sys = dms_tokenizer_chat_render(t, &um, 1, NULL, &err);
        CHECK(sys && strstr(sys, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                                 "<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"));
        free(sys);
        check_cases(t, exp, "smollm2");
        check_chat(t, exp, dms_tokenizer_chat_template(t), "smollm2");
        static const char *const stops[] = {"<|im_end|>", "<|endoftext|>"};
        check_stop(t, stops, 2, "smollm2");
        /* every token's bytes: single-byte tokens map back to their byte */
        for (int b = 0; b < 256; b++) {
            char one[2] = {(char)b, 0};
            int32_t *ids;
            size_t n;
            if (b == 0) continue;
            if (dms_tokenizer_encode(t, one, 1, 0, &ids, &n, &err) == 0) {
                size_t bl;
                const char *bytes = n == 1 ? dms_tokenizer_token_bytes(t, ids[0], &bl) : NULL;
                /* SmolLM2 lacks tokens for a few control bytes; tokenizers drops them too */
                if (b < 0x80)
                    CHECK_MSG(n == 0 || (n == 1 && bl == 1 && (unsigned char)bytes[0] == b), "byte %d", b);
                free(ids);
            } else if (b < 0x80) {
                CHECK_MSG(0, "byte %d: %s", b, err.msg);
            }
        }
        int32_t *ids;
        size_t n;
        CHECK(dms_tokenizer_encode(t, "a\xff", 2, 1, &ids, &n, &err) == -1);
        CHECK(strstr(err.msg, "UTF-8") != NULL);
        check_speed(t, exp, "smollm2");
        CHECK(dms_tokenizer_hash(t) != 0);
        printf("smollm2 hash %016llx\n", (unsigned long long)dms_tokenizer_hash(t));
    }
    cJSON_Delete(exp);
    dms_tokenizer_free(t);
    dms_gguf_close(&g);
}

static uint64_t test_tiny(const char *kind, const char *const *stops, int n_stops, int want_add_bos) {
    char tj[256], tc[256], ej[256];
    snprintf(tj, sizeof tj, FIX "/tiny_%s/tokenizer.json", kind);
    snprintf(tc, sizeof tc, FIX "/tiny_%s/tokenizer_config.json", kind);
    snprintf(ej, sizeof ej, FIX "/tiny_%s/expected.json", kind);
    dms_err err;
    uint64_t h = 0;
    dms_tokenizer *t = dms_tokenizer_from_json(tj, tc, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    cJSON *exp = load_json(ej);
    CHECK(exp != NULL);
    if (t && exp) {
        printf("tiny_%s: %s\n", kind, dms_tokenizer_describe(t));
        CHECK(dms_tokenizer_add_bos(t) == want_add_bos);
        const char *bos = jstr(exp, "bos");
        CHECK(dms_tokenizer_bos(t) == (bos ? dms_tokenizer_lookup(t, bos) : -1));
        CHECK(dms_tokenizer_eos(t) == dms_tokenizer_lookup(t, jstr(exp, "eos")));
        check_cases(t, exp, kind);
        check_chat(t, exp, dms_tokenizer_chat_template(t), kind);
        check_stop(t, stops, n_stops, kind);
        h = dms_tokenizer_hash(t);
        check_speed(t, exp, kind);
    }
    cJSON_Delete(exp);
    dms_tokenizer_free(t);
    return h;
}

static void write_file(const char *path, const char *s) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputs(s, f);
    fclose(f);
}

static void expect_json_error(const char *path, const char *content, const char *needle) {
    dms_err err;
    err.msg[0] = '\0';
    if (content) write_file(path, content);
    dms_tokenizer *t = dms_tokenizer_from_json(path, NULL, &err);
    CHECK_MSG(t == NULL, "%s should fail", path);
    CHECK_MSG(strstr(err.msg, path) && strstr(err.msg, needle), "message \"%s\" (want path and \"%s\")",
              err.msg, needle);
    if (!strchr(err.msg, '\n')) CHECK(1);
    else CHECK_MSG(0, "message is not one line: %s", err.msg);
    dms_tokenizer_free(t);
    if (content) unlink(path);
}

static void test_errors(void) {
    char dir[] = "/tmp/dms_tok_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK_MSG(0, "mkdtemp failed");
        return;
    }
    char p[512];
    snprintf(p, sizeof p, "%s/missing/tokenizer.json", dir);
    expect_json_error(p, NULL, "cannot open");
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    expect_json_error(p, "{\"model\": {\"type\": \"BPE\", ", "invalid JSON");
    expect_json_error(p, "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}",
                      "model.type 'Unigram' not supported");
    expect_json_error(p,
                      "{\"normalizer\": {\"type\": \"Lowercase\"}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"},"
                      " \"decoder\": {\"type\": \"ByteLevel\"},"
                      " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
                      "normalizer 'Lowercase' not supported");
    expect_json_error(p,
                      "{\"pre_tokenizer\": {\"type\": \"Metaspace\"}, \"decoder\": {\"type\": \"ByteLevel\"},"
                      " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
                      "pre_tokenizer 'Metaspace' not supported");
    expect_json_error(p,
                      "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"decoder\": {\"type\": \"ByteLevel\"},"
                      " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}",
                      "not in the vocabulary");
    expect_json_error(p,
                      "{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"},"
                      " \"behavior\": \"Isolated\"}, \"decoder\": {\"type\": \"ByteLevel\"},"
                      " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
                      "regex");
    /* ids are below DMS_CONFIG_MAX_VOCAB (the table is sized by the largest id) */
    expect_json_error(p,
                      "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"decoder\": {\"type\": \"ByteLevel\"},"
                      " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 16777216}, \"merges\": []}}",
                      "vocab entry 'a' has a bad id");
    rmdir(dir);

    /* GGUF metadata errors, through an in-memory dms_gguf */
    dms_gguf_kv kv[2];
    memset(kv, 0, sizeof kv);
    kv[0].key = (dms_gguf_str){"tokenizer.ggml.model", strlen("tokenizer.ggml.model")};
    kv[0].type = GGUF_T_STRING;
    kv[0].v.s = (dms_gguf_str){"gpt2", 4};
    kv[1].key = (dms_gguf_str){"tokenizer.ggml.pre", strlen("tokenizer.ggml.pre")};
    kv[1].type = GGUF_T_STRING;
    kv[1].v.s = (dms_gguf_str){"mystery-pre", strlen("mystery-pre")};
    char fake[] = "fake/model.gguf";
    dms_gguf g;
    memset(&g, 0, sizeof g);
    g.file.path = fake;
    g.kv = kv;
    g.n_kv = 2;
    dms_err err;
    CHECK(dms_tokenizer_from_gguf(&g, &err) == NULL);
    CHECK_MSG(strstr(err.msg, fake) && strstr(err.msg, "'mystery-pre'"), "%s", err.msg);
    kv[0].v.s = (dms_gguf_str){"llama", 5};
    CHECK(dms_tokenizer_from_gguf(&g, &err) == NULL);
    CHECK_MSG(strstr(err.msg, fake) && strstr(err.msg, "'llama' not supported"), "%s", err.msg);

    /* chat: no template / a construct the engine does not run (more in test_chat_template) */
    dms_chat_msg m = {"user", "hi", NULL};
    CHECK(dms_chat_render_tpl(NULL, &m, 1, 1, &err) == NULL);
    CHECK(dms_chat_render_tpl("{% extends 'base.jinja' %}", &m, 1, 1, &err) == NULL);
    CHECK_MSG(strstr(err.msg, "unsupported statement 'extends'") != NULL, "%s", err.msg);
}

/* Jinja's trim is Python's str.strip(): Unicode whitespace too. */
static void test_chat_units(void) {
    dms_err err;
    dms_chat_msg m[2] = {{"user", " \t hi there \n", NULL}, {"assistant", "\xe3\x80\x80ok\xc2\xa0", NULL}};
    char *r = dms_chat_render_tpl("{% for m in messages %}[{{ m.content | trim }}]{% endfor %}", m, 2, 1, &err);
    CHECK_STR(r ? r : err.msg, "[hi there][ok]");
    free(r);
}

int main(void) {
    test_smollm2();
    static const char *const l3_stops[] = {"<|eot_id|>", "<|end_of_text|>"};
    static const char *const q2_stops[] = {"<|im_end|>", "<|endoftext|>"};
    uint64_t h1 = test_tiny("llama3", l3_stops, 2, 1);
    uint64_t h2 = test_tiny("qwen2", q2_stops, 2, 0);
    CHECK(h1 != 0 && h2 != 0 && h1 != h2);
    test_errors();
    test_chat_units();
    return dms_check_finish();
}
