/* chat_template.c - renders conversations the way the models' Jinja chat
 * templates do, without a Jinja engine: ChatML (SmolLM2, Qwen2/2.5/3) and
 * Llama 3 are recognised from the template text, and the only data taken
 * from it is ChatML's default system prompt. Checked against transformers'
 * apply_chat_template in tests/test_tokenizer.c. */
#include "model/tokenizer.h"

#include <stdlib.h>
#include <string.h>

dms_chat_kind dms_chat_detect(const char *src) {
    if (!src) return DMS_CHAT_NONE;
    if (strstr(src, "<|im_start|>")) return DMS_CHAT_CHATML;
    if (strstr(src, "<|start_header_id|>")) return DMS_CHAT_LLAMA3;
    return DMS_CHAT_NONE;
}

const char *dms_chat_kind_name(dms_chat_kind k) {
    switch (k) {
    case DMS_CHAT_CHATML: return "chatml";
    case DMS_CHAT_LLAMA3: return "llama3";
    default: return "none";
    }
}

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1) nc *= 2;
        char *p = realloc(b->s, nc);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = nc;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

static void puts_(sbuf *b, const char *s) { if (s) put(b, s, strlen(s)); } /* NULL = "" */

/* Python str.isspace() at s (what Jinja's `trim` strips); returns the
 * character's byte length or 0. */
static size_t py_space_at(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    if (s[0] < 0x80)
        return ((s[0] >= 9 && s[0] <= 13) || (s[0] >= 0x1C && s[0] <= 0x20)) ? 1 : 0;
    if (n >= 2 && s[0] == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;
    if (n >= 3 && s[0] == 0xE1 && s[1] == 0x9A && s[2] == 0x80) return 3;            /* U+1680 */
    if (n >= 3 && s[0] == 0xE2 && s[1] == 0x80 &&
        ((s[2] >= 0x80 && s[2] <= 0x8A) || s[2] == 0xA8 || s[2] == 0xA9 || s[2] == 0xAF))
        return 3;                                                                    /* U+2000-200A, 2028/9, 202F */
    if (n >= 3 && s[0] == 0xE2 && s[1] == 0x81 && s[2] == 0x9F) return 3;            /* U+205F */
    if (n >= 3 && s[0] == 0xE3 && s[1] == 0x80 && s[2] == 0x80) return 3;            /* U+3000 */
    return 0;
}

static void put_trimmed(sbuf *b, const char *s) {
    if (!s) return;
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), st = 0, en = n;
    size_t l;
    while (st < n && (l = py_space_at(u + st, n - st))) st += l;
    while (en > st) {
        size_t k = en - 1;
        while (k > st && (u[k] & 0xC0) == 0x80) k--;
        if (py_space_at(u + k, en - k) != en - k) break;
        en = k;
    }
    put(b, s + st, en - st);
}

static char *render(dms_chat_kind k, const char *default_system, const dms_chat_msg *msgs, size_t n,
                    int gen, dms_err *err) {
    sbuf b = {0};
    put(&b, "", 0);
    if (k == DMS_CHAT_CHATML) {
        if (default_system && n > 0 && strcmp(msgs[0].role, "system")) {
            puts_(&b, "<|im_start|>system\n");
            puts_(&b, default_system);
            puts_(&b, "<|im_end|>\n");
        }
        for (size_t i = 0; i < n; i++) {
            puts_(&b, "<|im_start|>");
            puts_(&b, msgs[i].role);
            puts_(&b, "\n");
            puts_(&b, msgs[i].content);
            puts_(&b, "<|im_end|>\n");
        }
        if (gen) puts_(&b, "<|im_start|>assistant\n");
    } else if (k == DMS_CHAT_LLAMA3) {
        /* the template's leading bos_token is left to BOS handling (tokenizer.h) */
        for (size_t i = 0; i < n; i++) {
            puts_(&b, "<|start_header_id|>");
            puts_(&b, msgs[i].role);
            puts_(&b, "<|end_header_id|>\n\n");
            put_trimmed(&b, msgs[i].content);
            puts_(&b, "<|eot_id|>");
        }
        if (gen) puts_(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    } else {
        dms_errf(err, "chat template: no chat format (the model has no ChatML or Llama 3 template)");
        free(b.s);
        return NULL;
    }
    if (b.oom) {
        free(b.s);
        dms_errf(err, "chat template: out of memory");
        return NULL;
    }
    return b.s;
}

char *dms_chat_render(dms_chat_kind k, const dms_chat_msg *msgs, size_t n, int add_generation_prompt,
                      dms_err *err) {
    return render(k, NULL, msgs, n, add_generation_prompt, err);
}

/* Finds a string literal in the template holding "<|im_start|>system\n",
 * then text, then "<|im_end|>" (the newline written either as a real one or
 * as the Jinja escape \n): that text is the default system prompt. Literals
 * that end before <|im_end|> (e.g. '<|im_start|>system\n' + messages[0]...)
 * are skipped. */
char *dms_chat_default_system(const char *src) {
    static const char head[] = "<|im_start|>system", tail[] = "<|im_end|>";
    if (!src) return NULL;
    for (const char *p = strstr(src, head); p; p = strstr(p + 1, head)) {
        if (p == src || (p[-1] != '\'' && p[-1] != '"')) continue;
        char quote = p[-1];
        const char *q = p + sizeof head - 1;
        if (q[0] == '\n') q += 1;
        else if (q[0] == '\\' && q[1] == 'n') q += 2;
        else continue;
        const char *end = strstr(q, tail);
        if (!end || end <= q) continue;
        /* the literal must run on through <|im_end|>: no unescaped quote before it */
        int closed = 0;
        for (const char *c = q; c < end; c++) {
            if (*c == '\\' && c + 1 < end) {
                c++;
                continue;
            }
            if (*c == quote) {
                closed = 1;
                break;
            }
        }
        if (closed) continue;
        /* undo Python/Jinja string escapes */
        char *out = malloc((size_t)(end - q) + 1), *o = out;
        if (!out) return NULL;
        for (const char *c = q; c < end; c++) {
            if (*c == '\\' && c + 1 < end) {
                c++;
                switch (*c) {
                case 'n': *o++ = '\n'; break;
                case 't': *o++ = '\t'; break;
                case 'r': *o++ = '\r'; break;
                case '\\': *o++ = '\\'; break;
                case '\'': *o++ = '\''; break;
                case '"': *o++ = '"'; break;
                default: *o++ = '\\'; *o++ = *c; break;
                }
            } else {
                *o++ = *c;
            }
        }
        *o = '\0';
        return out;
    }
    return NULL;
}

char *dms_chat_render_tpl(const char *template_src, const dms_chat_msg *msgs, size_t n,
                          int add_generation_prompt, dms_err *err) {
    if (!template_src) {
        dms_errf(err, "chat template: the model has no chat template");
        return NULL;
    }
    dms_chat_kind k = dms_chat_detect(template_src);
    if (k == DMS_CHAT_NONE) {
        dms_errf(err, "chat template: not recognised (ChatML and Llama 3 templates only)");
        return NULL;
    }
    char *sys = k == DMS_CHAT_CHATML ? dms_chat_default_system(template_src) : NULL;
    char *r = render(k, sys, msgs, n, add_generation_prompt, err);
    free(sys);
    return r;
}
