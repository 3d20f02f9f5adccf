/* test_chat_template.c - the Jinja engine and the chat layer against
 * transformers: every conversation of tests/fixtures/chat_templates/
 * expected.json (tests/reference/make_chat_fixtures.py: Qwen3, Qwen2.5,
 * DeepSeek-R1-Distill-Qwen / -Llama, Llama 3.1 / 3.2, SmolLM2 with
 * add_generation_prompt, enable_thinking and date_string varied) and the
 * engine's semantic cases must render byte for byte; unsupported constructs
 * and raise_exception must fail with their name / message; the tokenizer's
 * bos/eos reach the template; and `dms prep` parses special tokens in plain
 * text unless literal_special. */
#define _DEFAULT_SOURCE
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/mapped_file.h"
#include "data/prep.h"
#include "kernels/backend.h"
#include "model/chat_template.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "tests/check.h"

#define FIX "tests/fixtures/chat_templates"

static char *read_file(const char *path) {
    dms_err err;
    size_t len;
    char *t = dms_read_text_file(path, &len, &err);
    if (!t) fprintf(stderr, "%s\n", err.msg);
    return t;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Where two strings first differ, for a readable failure. */
static void show_diff(const char *what, const char *got, const char *want) {
    size_t i = 0;
    while (got[i] && got[i] == want[i]) i++;
    size_t from = i > 40 ? i - 40 : 0;
    fprintf(stderr, "  %s: first difference at byte %zu\n   got: \"%.80s\"\n  want: \"%.80s\"\n", what, i, got + from,
            want + from);
}

static time_t fixture_now(const cJSON *exp) {
    const char *s = jstr(exp, "now_local");
    struct tm tm = {0};
    if (!s || sscanf(s, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                     &tm.tm_sec) != 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    tm.tm_isdst = -1;
    return mktime(&tm);
}

static void test_published_templates(const cJSON *exp) {
    const cJSON *convs = cJSON_GetObjectItemCaseSensitive(exp, "conversations");
    const cJSON *tpls = cJSON_GetObjectItemCaseSensitive(exp, "templates");
    const time_t now = fixture_now(exp);
    CHECK(now != 0);
    static const char *const want_models[] = {"qwen3", "qwen2.5", "deepseek-r1-distill-qwen", "deepseek-r1-distill-llama",
                                              "llama3.1", "llama3.2", "smollm2"};
    for (size_t k = 0; k < sizeof want_models / sizeof *want_models; k++)
        CHECK_MSG(cJSON_GetObjectItemCaseSensitive(tpls, want_models[k]) != NULL, "%s missing from expected.json",
                  want_models[k]);
    int total = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tpls) {
        char path[256];
        snprintf(path, sizeof path, FIX "/%s", jstr(t, "file"));
        char *src = read_file(path);
        CHECK_MSG(src != NULL, "%s", path);
        if (!src) continue;
        int n_ok = 0, n_cases = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(t, "cases")) {
            const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(convs, jstr(c, "conversation"));
            dms_chat_msg m[16];
            size_t n = 0;
            const cJSON *mm;
            cJSON_ArrayForEach(mm, msgs) if (n < 16) m[n++] =
                (dms_chat_msg){jstr(mm, "role"), jstr(mm, "content"), jstr(mm, "reasoning_content")};
            dms_chat_opts o;
            dms_chat_opts_default(&o);
            o.add_generation_prompt = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "add_generation_prompt"));
            const cJSON *th = cJSON_GetObjectItemCaseSensitive(c, "enable_thinking");
            o.enable_thinking = cJSON_IsBool(th) ? cJSON_IsTrue(th) : -1;
            o.date_string = jstr(c, "date_string");
            o.bos_token = jstr(t, "bos_token");
            o.eos_token = jstr(t, "eos_token");
            o.now = now;
            dms_err err = {{0}};
            char *r = dms_chat_render_str(src, m, n, &o, &err);
            const char *want = jstr(c, "rendered");
            n_cases++;
            if (!r) {
                CHECK_MSG(0, "%s/%s: %s", t->string, jstr(c, "conversation"), err.msg);
                continue;
            }
            if (strcmp(r, want)) {
                CHECK_MSG(0, "%s/%s (gen %d, thinking %d, date %s) differs from transformers", t->string,
                          jstr(c, "conversation"), o.add_generation_prompt, o.enable_thinking,
                          o.date_string ? o.date_string : "-");
                show_diff(t->string, r, want);
            } else {
                n_ok++;
            }
            free(r);
        }
        printf("%s: %d/%d renderings equal transformers'\n", t->string, n_ok, n_cases);
        CHECK_MSG(n_cases >= 60, "%s: only %d cases", t->string, n_cases);
        total += n_cases;
        free(src);
    }
    CHECK_MSG(total >= 540, "only %d renderings", total);
}

static void test_engine_cases(const cJSON *exp) {
    const cJSON *convs = cJSON_GetObjectItemCaseSensitive(exp, "conversations");
    /* make_chat_fixtures.py renders these with [U1, A_THINK1, U2]: think-history's first three */
    const cJSON *two = cJSON_GetObjectItemCaseSensitive(convs, "think-history");
    dms_chat_msg m[3];
    for (int i = 0; i < 3; i++) {
        const cJSON *mm = cJSON_GetArrayItem(two, i);
        m[i] = (dms_chat_msg){jstr(mm, "role"), jstr(mm, "content"), jstr(mm, "reasoning_content")};
    }
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(exp, "engine_cases")) {
        dms_chat_opts o;
        dms_chat_opts_default(&o);
        o.add_generation_prompt = 1;
        o.bos_token = "<s>";
        dms_err err = {{0}};
        const char *src = jstr(c, "template"), *want = jstr(c, "rendered");
        char *r = dms_chat_render_str(src, m, 3, &o, &err);
        CHECK_MSG(r != NULL, "engine case %d: %s\n  template: %s", n, err.msg, src);
        if (r && strcmp(r, want)) {
            CHECK_MSG(0, "engine case %d differs from transformers\n  template: %s", n, src);
            show_diff("engine", r, want);
        }
        free(r);
        n++;
    }
    CHECK_MSG(n >= 25, "only %d engine cases", n);
}

/* err.msg must contain every needle */
static void expect_error(const char *tpl, const dms_chat_msg *m, size_t n, const char *const *needles) {
    dms_err err = {{0}};
    char *r = dms_chat_render_tpl(tpl, m, n, 1, &err);
    CHECK_MSG(r == NULL, "rendered '%s' but wanted an error", r ? r : "");
    free(r);
    for (const char *const *p = needles; *p; p++)
        CHECK_MSG(strstr(err.msg, *p) != NULL, "template %s\n  error \"%s\" lacks \"%s\"", tpl, err.msg, *p);
    CHECK_MSG(!strncmp(err.msg, "chat template: ", 15), "%s", err.msg);
    CHECK_MSG(strchr(err.msg, '\n') == NULL, "%s", err.msg);
}

static void test_errors(void) {
    dms_chat_msg m[2] = {{"user", "hi", NULL}, {"user", "again", NULL}};
#define E(tpl, ...) expect_error(tpl, m, 2, (const char *const[]){__VA_ARGS__, NULL})
    E("a\nb\n{{ 'x' | foo }}", "chat template: unsupported filter 'foo' at line 3");
    E("{% if messages is foo %}{% endif %}", "unsupported test 'foo' at line 1");
    E("\n{% call f() %}x{% endcall %}", "unsupported statement 'call' at line 2");
    E("{% macro f(a) %}{{ a }}{% endmacro %}{{ f(1, 2) }}", "macro 'f' takes at most 1 arguments");
    E("{% include 'x.jinja' %}", "unsupported statement 'include'");
    /* runaway strings stop at the engine's caps (JSB_MAX, JA_MAX), found by fuzzing: each join or
     * concatenation doubles the string; without the caps this asks for gigabytes */
    E("{% set s = namespace(v='0123456789abcdef') %}{% for i in range(40) %}{% set s.v = s.v ~ s.v %}{% endfor %}"
      "{{ s.v|length }}",
      "out of memory");
    E("{% set s = namespace(v='0123456789abcdef') %}{% for i in range(40) %}{% set s.v = [s.v, s.v]|join('') %}"
      "{% endfor %}{{ s.v|length }}",
      "out of memory");
    E("{{ 'abc'.zfill(5) }}", "unsupported method 'zfill' on str at line 1");
    E("{{ messages|tojson(ensure_ascii=true) }}", "ensure_ascii");
    E("{% for m in messages %}{% if m.role == 'user' and loop.index0 > 0 %}"
      "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% endfor %}",
      "Conversation roles must alternate user/assistant/user/assistant/...", "raise_exception at line 1");
    E("{% if true %}never closed", "unclosed {% if %}");
    E("{{ x.y }}", "'x' is undefined at line 1");
    E("{{ 'a' + 1 }}", "unsupported operand types for +: 'str' and 'int'");
    E("{% endfor %}", "unexpected 'endfor'");
    E("{{ 1 +  }}", "syntax error");
    E("{{ 'unterminated }}", "unterminated string");
    E("{% set ns = namespace() %}{% set ns._x = 1 %}", "underscore");
    E("{{ raise_exception('two\nlines') }}", "two?lines (raise_exception at line 1)"); /* one line (core/err.c) */
    E("{{ [1]|reject('no\nsuch') }}", "unsupported test 'no?such'");
#undef E
    dms_err err = {{0}};
    CHECK(dms_chat_render_tpl(NULL, m, 1, 1, &err) == NULL);
    CHECK(strstr(err.msg, "no chat template") != NULL);
    /* a message without content: the key is absent, as transformers drops None */
    dms_chat_msg nc[1] = {{"user", NULL, NULL}};
    char *r = dms_chat_render_tpl("{{ messages[0].content is defined }}|{{ messages[0].role }}", nc, 1, 0, &err);
    CHECK_MSG(r && !strcmp(r, "False|user"), "%s", r ? r : err.msg);
    free(r);
    /* strftime_now on the injected clock */
    dms_chat_opts o;
    dms_chat_opts_default(&o);
    struct tm tm = {.tm_year = 124, .tm_mon = 6, .tm_mday = 26, .tm_hour = 12, .tm_isdst = -1};
    o.now = mktime(&tm);
    r = dms_chat_render_str("{{ strftime_now('%d %b %Y') }}", m, 1, &o, &err);
    CHECK_MSG(r && !strcmp(r, "26 Jul 2024"), "%s", r ? r : err.msg);
    free(r);
    CHECK_STR(dms_chat_kind_name(dms_chat_detect("{{ '<|im_start|>' }}")), "chatml");
    CHECK_STR(dms_chat_kind_name(dms_chat_detect(NULL)), "none");
}

/* The tokenizer supplies bos_token / eos_token; BOS is not doubled. */
static void test_tokenizer_bos(void) {
    dms_err err = {{0}};
    dms_tokenizer *t = dms_tokenizer_from_json("tests/fixtures/tokenizer/tiny_llama3/tokenizer.json",
                                               "tests/fixtures/tokenizer/tiny_llama3/tokenizer_config.json", &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (!t) return;
    CHECK_STR(dms_tokenizer_bos_token(t), "<|begin_of_text|>");
    CHECK_STR(dms_tokenizer_eos_token(t), "<|eot_id|>");
    dms_chat_msg m[1] = {{"user", "Hi", NULL}};
    dms_chat_opts o;
    dms_chat_opts_default(&o);
    o.add_generation_prompt = 1;
    char *r = dms_tokenizer_chat_render(t, m, 1, &o, &err);
    CHECK_MSG(r && !strncmp(r, "<|begin_of_text|><|start_header_id|>user", 40), "%s", r ? r : err.msg);
    int32_t *ids = NULL;
    size_t n = 0;
    if (r && dms_tokenizer_encode(t, r, strlen(r), 1, &ids, &n, &err) == 0 &&
        dms_tokenizer_prepend_bos(t, &ids, &n, &err) == 0) {
        int bos = 0;
        for (size_t i = 0; i < n; i++) bos += ids[i] == dms_tokenizer_bos(t);
        CHECK_MSG(bos == 1 && ids[0] == dms_tokenizer_bos(t), "%d BOS", bos);
    } else {
        CHECK_MSG(0, "%s", err.msg);
    }
    free(ids);
    free(r);
    dms_tokenizer_free(t);

    t = dms_tokenizer_from_json("tests/fixtures/tokenizer/tiny_qwen2/tokenizer.json",
                                "tests/fixtures/tokenizer/tiny_qwen2/tokenizer_config.json", &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (!t) return;
    CHECK(dms_tokenizer_bos_token(t) == NULL); /* "bos_token": null */
    CHECK_STR(dms_tokenizer_eos_token(t), "<|im_end|>");
    dms_tokenizer_free(t);

    /* a template the engine cannot parse: the model loads, rendering names the construct */
    char dir[] = "/tmp/dms-chat-XXXXXX", cfg[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(cfg, "w");
    if (f) {
        fputs("{\"eos_token\": \"<|im_end|>\", \"chat_template\": \"{{ messages }}\\n{{ 1 | nope }}\"}", f);
        fclose(f);
    }
    t = dms_tokenizer_from_json("tests/fixtures/tokenizer/tiny_qwen2/tokenizer.json", cfg, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (t) {
        const char *perr = NULL;
        CHECK(dms_tokenizer_chat_jinja(t, &perr) == NULL && perr != NULL);
        r = dms_tokenizer_chat_render(t, m, 1, &o, &err);
        CHECK_MSG(r == NULL && !strcmp(err.msg, "chat template: unsupported filter 'nope' at line 2"), "%s", err.msg);
        free(r);
        dms_tokenizer_free(t);
    }
    unlink(cfg);
    rmdir(dir);
}

/* dms prep: a message's reasoning_content reaches the template (Qwen3's
 * reads it); a value that is not a string or null is an error naming it. */
static void test_prep_reasoning(void) {
    char dir[] = "/tmp/dms-chat-XXXXXX", cfg[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(cfg, "w");
    if (f) {
        fputs("{\"eos_token\": \"<|im_end|>\", \"chat_template\": \"{% for m in messages %}[{{ m.role }}|"
              "{{ m.reasoning_content if m.reasoning_content is defined else '-' }}|{{ m.content }}]{% endfor %}\"}",
              f);
        fclose(f);
    }
    dms_err err = {{0}};
    dms_tokenizer *t = dms_tokenizer_from_json("tests/fixtures/tokenizer/tiny_qwen2/tokenizer.json", cfg, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (t) {
        dms_prep_line_opts lo;
        dms_prep_line_opts_default(&lo);
        dms_prep_doc d = {0};
        int fatal = 0;
        const char *line = "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", "
                           "\"content\": \"a\", \"reasoning_content\": \"why\"}, {\"role\": \"user\", \"content\": "
                           "\"r\", \"reasoning_content\": null}]}";
        CHECK_MSG(dms_prep_encode_line_opts(t, line, strlen(line), &lo, &d, &fatal, &err) == 0, "%s", err.msg);
        char *s = dms_tokenizer_decode(t, (const int32_t *)d.ids, d.n, 1);
        CHECK_MSG(s && strstr(s, "[user|-|q][assistant|why|a][user|-|r]"), "rendered: %s", s ? s : "(null)");
        free(s);
        const char *bad = "{\"messages\": [{\"role\": \"assistant\", \"content\": \"a\", \"reasoning_content\": 5}]}";
        CHECK(dms_prep_encode_line_opts(t, bad, strlen(bad), &lo, &d, &fatal, &err) != 0);
        CHECK_MSG(strstr(err.msg, "messages[0].reasoning_content must be a string or null, got a number"), "%s",
                  err.msg);
        dms_prep_doc_free(&d);
        dms_tokenizer_free(t);
    }
    unlink(cfg);
    rmdir(dir);
}

static int count_id(const dms_prep_doc *d, int32_t id) {
    int k = 0;
    for (size_t i = 0; i < d->n; i++) k += (int32_t)d->ids[i] == id;
    return k;
}

/* dms prep: special-token strings in {"text": ...} are parsed by default
 * (as transformers' tokenizer and llama.cpp do), literal with
 * literal_special; chats are unaffected. */
static void test_prep_special(void) {
    const char *model = getenv("DMS_DEFAULT_GGUF") ? getenv("DMS_DEFAULT_GGUF") : "models/default.gguf";
    if (access(model, R_OK) != 0) {
        CHECK_MSG(0, "%s missing: run scripts/install_deps.sh", model);
        return;
    }
    dms_err err = {{0}};
    dms_model mdl;
    if (dms_model_load(&mdl, model, &dms_cpu_ops, DMS_LOAD_TOKENIZER, &err) != 0) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    const dms_tokenizer *tok = mdl.tok;
    const int32_t im_start = dms_tokenizer_lookup(tok, "<|im_start|>");
    CHECK(im_start >= 0);
    const char *line = "{\"text\": \"<|im_start|>user\\nhi<|im_end|>\"}";
    dms_prep_doc d = {0};
    int fatal = 0;
    dms_prep_line_opts lo;
    dms_prep_line_opts_default(&lo);
    CHECK_MSG(dms_prep_encode_line_opts(tok, line, strlen(line), &lo, &d, &fatal, &err) == 0, "%s", err.msg);
    CHECK_MSG(count_id(&d, im_start) == 1, "parsed: %d <|im_start|>", count_id(&d, im_start));
    const size_t n_parsed = d.n;
    CHECK_MSG(dms_prep_encode_line(tok, line, strlen(line), 0, &d, &fatal, &err) == 0, "%s", err.msg);
    CHECK_MSG(d.n == n_parsed && count_id(&d, im_start) == 1, "the plain entry parses too");
    lo.literal_special = 1;
    CHECK_MSG(dms_prep_encode_line_opts(tok, line, strlen(line), &lo, &d, &fatal, &err) == 0, "%s", err.msg);
    CHECK_MSG(count_id(&d, im_start) == 0 && d.n > n_parsed + 4, "literal: %d <|im_start|>, %zu tokens",
              count_id(&d, im_start), d.n);
    char *s = dms_tokenizer_decode(tok, (const int32_t *)d.ids, d.n, 1);
    CHECK_MSG(s && strstr(s, "<|im_start|>user\nhi<|im_end|>"), "%s", s);
    free(s);
    /* chats: the template's special tokens are always tokens */
    const char *chat = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"ok\"}]}";
    CHECK_MSG(dms_prep_encode_line_opts(tok, chat, strlen(chat), &lo, &d, &fatal, &err) == 0, "%s", err.msg);
    CHECK_MSG(count_id(&d, im_start) == 3, "chat: %d <|im_start|>", count_id(&d, im_start)); /* default system */
    dms_prep_doc_free(&d);
    dms_model_free(&mdl);
}

int main(void) {
    char *txt = read_file(FIX "/expected.json");
    cJSON *exp = txt ? cJSON_Parse(txt) : NULL;
    free(txt);
    CHECK_MSG(exp != NULL, FIX "/expected.json missing or invalid");
    if (exp) {
        test_published_templates(exp);
        test_engine_cases(exp);
    }
    cJSON_Delete(exp);
    test_errors();
    test_tokenizer_bos();
    test_prep_special();
    test_prep_reasoning();
    return dms_check_finish();
}
