/* jinja_lex.c - splits a template into text and the tokens inside
 * {{ }} / {% %} tags, applying Jinja's whitespace control exactly as
 * transformers' environment does: newlines normalised to \n and one trailing
 * newline dropped (keep_trailing_newline=False), `-` on a tag strips the
 * whitespace beside it, trim_blocks drops the newline after a block or
 * comment tag, lstrip_blocks drops the indentation before one (not with
 * `+`). {# comments #} vanish and {% raw %} blocks become text. String
 * literals are decoded with Python's escapes. */
#include "model/jinja_impl.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *s;
    size_t n, pos;
    int line;
    jarena *a;
    jtok *toks;
    size_t nt, cap;
    dms_err *err;
} lexer;

static int push(lexer *L, jtok t) {
    if (L->nt == L->cap) {
        size_t nc = L->cap ? 2 * L->cap : 256;
        jtok *p = realloc(L->toks, nc * sizeof *p);
        if (!p) return dms_errf(L->err, "out of memory");
        L->toks = p;
        L->cap = nc;
    }
    L->toks[L->nt++] = t;
    return 0;
}

static void count_lines(lexer *L, size_t from, size_t to) {
    for (size_t i = from; i < to; i++)
        if (L->s[i] == '\n') L->line++;
}

static size_t skip_space(const lexer *L, size_t i) {
    size_t k;
    while (i < L->n && (k = py_space_at((const unsigned char *)L->s + i, L->n - i))) i += k;
    return i;
}

/* Where a run of trailing str.isspace() characters of s[0..n) starts. */
static size_t rstrip_at(const char *s, size_t n) {
    size_t en = n;
    while (en > 0) {
        size_t k = en - 1;
        while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
        if (py_space_at((const unsigned char *)s + k, en - k) != en - k) break;
        en = k;
    }
    return en;
}

static int emit_data(lexer *L, const char *s, size_t n, int line) {
    if (n == 0) return 0;
    return push(L, (jtok){.t = JT_DATA, .line = line, .s = s, .n = n});
}

/* Decodes a Python string literal body (what unicode-escape accepts). */
static int decode_string(lexer *L, const char *s, size_t n, jtok *t) {
    jsb b = {0};
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c != '\\' || i + 1 >= n) {
            jsb_putc(&b, c);
            continue;
        }
        char e = s[++i];
        switch (e) {
        case '\n': break;
        case '\\': jsb_putc(&b, '\\'); break;
        case '\'': jsb_putc(&b, '\''); break;
        case '"': jsb_putc(&b, '"'); break;
        case 'a': jsb_putc(&b, '\a'); break;
        case 'b': jsb_putc(&b, '\b'); break;
        case 'f': jsb_putc(&b, '\f'); break;
        case 'n': jsb_putc(&b, '\n'); break;
        case 'r': jsb_putc(&b, '\r'); break;
        case 't': jsb_putc(&b, '\t'); break;
        case 'v': jsb_putc(&b, '\v'); break;
        case 'x':
        case 'u':
        case 'U': {
            size_t want = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            uint32_t cp = 0;
            size_t k = 0;
            for (; k < want && i + 1 + k < n && isxdigit((unsigned char)s[i + 1 + k]); k++) {
                char h = s[i + 1 + k];
                cp = cp * 16 + (uint32_t)(isdigit((unsigned char)h) ? h - '0' : (tolower((unsigned char)h) - 'a' + 10));
            }
            if (k != want || cp > 0x10FFFF) {
                free(b.s);
                return dms_errf(L->err, "bad \\%c escape in a string at line %d", e, t->line);
            }
            utf8_put(&b, cp);
            i += want;
            break;
        }
        case 'N':
            free(b.s);
            return dms_errf(L->err, "unsupported \\N{...} escape in a string at line %d", t->line);
        default:
            if (e >= '0' && e <= '7') {
                uint32_t cp = 0;
                size_t k = 0;
                for (; k < 3 && i + k < n && s[i + k] >= '0' && s[i + k] <= '7'; k++) cp = cp * 8 + (uint32_t)(s[i + k] - '0');
                utf8_put(&b, cp);
                i += k - 1;
            } else {
                jsb_putc(&b, '\\');
                jsb_putc(&b, e);
            }
        }
    }
    if (b.oom) {
        free(b.s);
        return dms_errf(L->err, "out of memory");
    }
    size_t len;
    t->s = jsb_to_arena(&b, L->a, &len);
    t->n = len;
    return t->s ? 0 : dms_errf(L->err, "out of memory");
}

static const char *const OPS2[] = {"//", "**", "==", "!=", "<=", ">="};
static const char OPS1[] = "+-*/%~()[]{},.:|=<>;";

/* Tokens of one tag up to its end; returns the index after the end marker
 * and sets *strip ('-', '+' or 0) from the end marker. */
static int lex_tag(lexer *L, int is_block, size_t *out_pos, char *strip) {
    const char close = is_block ? '%' : '}';
    int depth = 0;
    size_t i = L->pos;
    for (;;) {
        size_t j = skip_space(L, i);
        count_lines(L, i, j);
        i = j;
        if (i >= L->n)
            return dms_errf(L->err, "unexpected end of template: unclosed %s tag at line %d",
                            is_block ? "{%" : "{{", L->line);
        const char *p = L->s + i;
        size_t left = L->n - i;
        if (depth == 0) {
            if (left >= 3 && (p[0] == '-' || p[0] == '+') && p[1] == close && p[2] == '}') {
                if (p[0] == '+' && !is_block)
                    return dms_errf(L->err, "syntax error at line %d: unexpected '+'", L->line);
                *strip = p[0];
                *out_pos = i + 3;
                return 0;
            }
            if (left >= 2 && p[0] == close && p[1] == '}') {
                *strip = 0;
                *out_pos = i + 2;
                return 0;
            }
        }
        jtok t = {.line = L->line};
        unsigned char c = (unsigned char)p[0];
        if (isalpha(c) || c == '_' || c >= 0x80) {
            size_t k = 1;
            while (k < left && (isalnum((unsigned char)p[k]) || p[k] == '_' || (unsigned char)p[k] >= 0x80)) k++;
            t.t = JT_NAME;
            t.s = p;
            t.n = k;
            i += k;
        } else if (isdigit(c)) {
            size_t k = 0;
            int is_float = 0;
            while (k < left && (isdigit((unsigned char)p[k]) || p[k] == '_')) k++;
            if (k + 1 < left && p[k] == '.' && isdigit((unsigned char)p[k + 1])) {
                is_float = 1;
                k++;
                while (k < left && (isdigit((unsigned char)p[k]) || p[k] == '_')) k++;
            }
            if (k < left && (p[k] == 'e' || p[k] == 'E')) {
                size_t e = k + 1;
                if (e < left && (p[e] == '+' || p[e] == '-')) e++;
                if (e < left && isdigit((unsigned char)p[e])) {
                    is_float = 1;
                    k = e;
                    while (k < left && isdigit((unsigned char)p[k])) k++;
                }
            }
            char buf[64];
            size_t m = 0;
            for (size_t q = 0; q < k && m + 1 < sizeof buf; q++)
                if (p[q] != '_') buf[m++] = p[q];
            buf[m] = '\0';
            if (is_float) {
                t.t = JT_FLOAT;
                t.f = strtod(buf, NULL);
            } else {
                t.t = JT_INT;
                t.i = strtoll(buf, NULL, 10);
            }
            t.s = p;
            t.n = k;
            i += k;
        } else if (c == '\'' || c == '"') {
            size_t k = 1;
            while (k < left && p[k] != (char)c) k += p[k] == '\\' ? 2 : 1;
            if (k >= left) return dms_errf(L->err, "unterminated string at line %d", L->line);
            t.t = JT_STRING;
            if (decode_string(L, p + 1, k - 1, &t)) return -1;
            count_lines(L, i, i + k + 1);
            i += k + 1;
        } else {
            size_t k = 0;
            for (size_t q = 0; q < sizeof OPS2 / sizeof *OPS2; q++)
                if (left >= 2 && p[0] == OPS2[q][0] && p[1] == OPS2[q][1]) k = 2;
            if (!k && strchr(OPS1, (int)c) && c) k = 1;
            if (!k) return dms_errf(L->err, "syntax error at line %d: unexpected character '%c'", L->line, c);
            if (k == 1 && (c == '(' || c == '[' || c == '{')) depth++;
            if (k == 1 && (c == ')' || c == ']' || c == '}')) {
                if (depth == 0) return dms_errf(L->err, "syntax error at line %d: unexpected '%c'", L->line, c);
                depth--;
            }
            t.t = JT_OP;
            t.s = p;
            t.n = k;
            i += k;
        }
        if (push(L, t)) return -1;
    }
}

/* After a tag's end: `-` strips all whitespace, trim_blocks one newline. */
static size_t after_tag(lexer *L, size_t pos, char strip, int trim_newline) {
    size_t np = pos;
    if (strip == '-') np = skip_space(L, pos);
    else if (strip != '+' && trim_newline && np < L->n && L->s[np] == '\n') np++;
    count_lines(L, pos, np);
    return np;
}

/* Is the block at i (just after "{%" and its sign) "raw %}"? Sets *end_tag. */
static int raw_begin(const lexer *L, size_t i, size_t *after) {
    size_t j = skip_space(L, i);
    if (L->n - j < 3 || strncmp(L->s + j, "raw", 3)) return 0;
    j = skip_space(L, j + 3);
    if (j < L->n && L->s[j] == '-') j++;
    if (L->n - j < 2 || L->s[j] != '%' || L->s[j + 1] != '}') return 0;
    *after = j + 2;
    return 1;
}

int jinja_lex(const char *src, jarena *a, jtok **toks, size_t *n_toks, dms_err *err) {
    /* newlines -> \n, one trailing newline dropped */
    size_t sl = strlen(src);
    char *s = ja_alloc(a, sl + 1);
    if (!s) return dms_errf(err, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < sl; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < sl && src[i + 1] == '\n') i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n > 0 && s[n - 1] == '\n') n--;
    s[n] = '\0';
    lexer L = {.s = s, .n = n, .line = 1, .a = a, .err = err};
    int line_starting = 1;
    while (L.pos < L.n) {
        /* the next tag start */
        size_t t = L.pos;
        const char *hit = NULL;
        while (t + 1 < L.n) {
            if (L.s[t] == '{' && (L.s[t + 1] == '{' || L.s[t + 1] == '%' || L.s[t + 1] == '#')) {
                hit = L.s + t;
                break;
            }
            t++;
        }
        if (!hit) {
            if (emit_data(&L, L.s + L.pos, L.n - L.pos, L.line)) goto fail;
            break;
        }
        char kind = hit[1];
        char sign = t + 2 < L.n && (L.s[t + 2] == '-' || L.s[t + 2] == '+') ? L.s[t + 2] : 0;
        const char *text = L.s + L.pos;
        size_t tl = t - L.pos;
        int text_line = L.line;
        if (sign == '-') {
            tl = rstrip_at(text, tl);
        } else if (sign != '+' && kind != '{') { /* lstrip_blocks */
            size_t lp = tl;
            while (lp > 0 && text[lp - 1] != '\n') lp--;
            if (lp > 0 || line_starting) {
                size_t k = lp;
                size_t w;
                while (k < tl && (w = py_space_at((const unsigned char *)text + k, tl - k))) k += w;
                if (k == tl) tl = lp;
            }
        }
        if (emit_data(&L, text, tl, text_line)) goto fail;
        count_lines(&L, L.pos, t);
        size_t body = t + 2 + (sign ? 1 : 0);
        size_t end = 0;
        char strip = 0;
        if (kind == '#') {
            const char *e = strstr(L.s + body, "#}");
            if (!e) {
                dms_errf(err, "unexpected end of template: unclosed comment at line %d", L.line);
                goto fail;
            }
            size_t ep = (size_t)(e - L.s);
            if (ep > body && (L.s[ep - 1] == '-' || L.s[ep - 1] == '+')) strip = L.s[ep - 1];
            count_lines(&L, body, ep + 2);
            L.pos = after_tag(&L, ep + 2, strip, 1);
        } else if (kind == '%' && raw_begin(&L, body, &end)) {
            /* {% raw %} ... {% endraw %}: text up to the end tag */
            size_t after_raw = end;
            if (L.s[end - 3] == '-') after_raw = skip_space(&L, end);
            count_lines(&L, body, after_raw);
            size_t q = after_raw;
            size_t ts = 0, te = 0, stop = 0;
            char esign = 0, csign = 0;
            for (; q + 1 < L.n; q++) {
                if (L.s[q] != '{' || L.s[q + 1] != '%') continue;
                size_t r = q + 2;
                esign = (r < L.n && (L.s[r] == '-' || L.s[r] == '+')) ? L.s[r++] : 0;
                r = skip_space(&L, r);
                if (L.n - r < 6 || strncmp(L.s + r, "endraw", 6)) continue;
                r = skip_space(&L, r + 6);
                csign = (r < L.n && (L.s[r] == '-' || L.s[r] == '+')) ? L.s[r++] : 0;
                if (L.n - r < 2 || L.s[r] != '%' || L.s[r + 1] != '}') continue;
                ts = after_raw;
                te = q;
                stop = r + 2;
                break;
            }
            if (!stop) {
                dms_errf(err, "unexpected end of template: {%% raw %%} without {%% endraw %%} at line %d", L.line);
                goto fail;
            }
            size_t dl = te - ts;
            if (esign == '-') dl = rstrip_at(L.s + ts, dl);
            if (emit_data(&L, L.s + ts, dl, L.line)) goto fail;
            count_lines(&L, after_raw, stop);
            L.pos = after_tag(&L, stop, csign, 1);
        } else {
            int is_block = kind == '%';
            if (push(&L, (jtok){.t = is_block ? JT_BLOCK_BEGIN : JT_VAR_BEGIN, .line = L.line})) goto fail;
            L.pos = body;
            if (lex_tag(&L, is_block, &end, &strip)) goto fail;
            if (push(&L, (jtok){.t = is_block ? JT_BLOCK_END : JT_VAR_END, .line = L.line})) goto fail;
            L.pos = after_tag(&L, end, strip, is_block);
        }
        line_starting = L.pos > 0 && L.s[L.pos - 1] == '\n';
    }
    if (push(&L, (jtok){.t = JT_EOF, .line = L.line})) goto fail;
    *toks = L.toks;
    *n_toks = L.nt;
    return 0;
fail:
    free(L.toks);
    return -1;
}
