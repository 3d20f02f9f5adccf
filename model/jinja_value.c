/* jinja_value.c - the values a chat template computes with and their Python
 * semantics (truthiness, ==, str(), repr(), json.dumps as transformers'
 * tojson calls it), the memory they live in (an arena freed with the
 * template or the render), the string builder the renderer writes into, and
 * the UTF-8 / str.isspace() helpers the string functions share. */
#include "model/jinja_impl.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ arena */
struct ja_block {
    ja_block *next;
    size_t used, cap;
    max_align_t data[];
};

void *ja_alloc(jarena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->used + n > a->head->cap) {
        size_t cap = n > 16384 ? n : 16384;
        ja_block *b = a->total + cap <= JA_MAX ? malloc(sizeof *b + cap) : NULL;
        if (!b) {
            a->oom = 1;
            return NULL;
        }
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
        a->total += cap;
    }
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

char *ja_strndup(jarena *a, const char *s, size_t n) {
    char *p = ja_alloc(a, n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void ja_release(jarena *a) {
    for (ja_block *b = a->head, *nx; b; b = nx) {
        nx = b->next;
        free(b);
    }
    a->head = NULL;
    a->total = 0;
}

/* ----------------------------------------------------------- string builder */
void jsb_put(jsb *b, const char *s, size_t n) {
    if (b->oom) return;
    if (n > JSB_MAX || b->n + n + 1 > JSB_MAX) {
        b->oom = 1;
        return;
    }
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
    if (n) memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

void jsb_putc(jsb *b, char c) { jsb_put(b, &c, 1); }
void jsb_puts(jsb *b, const char *s) { jsb_put(b, s, strlen(s)); }

void jsb_printf(jsb *b, const char *fmt, ...) {
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (k > 0) jsb_put(b, buf, (size_t)k < sizeof buf ? (size_t)k : sizeof buf - 1);
}

char *jsb_to_arena(jsb *b, jarena *a, size_t *len) {
    char *r = b->oom ? NULL : ja_strndup(a, b->s ? b->s : "", b->n);
    if (len) *len = b->n;
    free(b->s);
    memset(b, 0, sizeof *b);
    return r;
}

/* ------------------------------------------------------------------ UTF-8 */
size_t py_space_at(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    if (s[0] < 0x80) return ((s[0] >= 9 && s[0] <= 13) || (s[0] >= 0x1C && s[0] <= 0x20)) ? 1 : 0;
    if (n >= 2 && s[0] == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;
    if (n >= 3 && s[0] == 0xE1 && s[1] == 0x9A && s[2] == 0x80) return 3; /* U+1680 */
    if (n >= 3 && s[0] == 0xE2 && s[1] == 0x80 &&
        ((s[2] >= 0x80 && s[2] <= 0x8A) || s[2] == 0xA8 || s[2] == 0xA9 || s[2] == 0xAF))
        return 3;                                                         /* U+2000-200A, 2028/9, 202F */
    if (n >= 3 && s[0] == 0xE2 && s[1] == 0x81 && s[2] == 0x9F) return 3; /* U+205F */
    if (n >= 3 && s[0] == 0xE3 && s[1] == 0x80 && s[2] == 0x80) return 3; /* U+3000 */
    return 0;
}

size_t utf8_next(const char *s, size_t n, size_t i) {
    i++;
    while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
    return i;
}

size_t utf8_len(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) k++;
    return k;
}

uint32_t utf8_decode(const char *s, size_t n, size_t i, size_t *adv) {
    const unsigned char *u = (const unsigned char *)s + i;
    size_t left = n - i;
    uint32_t c = u[0];
    size_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (k > left) k = left;
    if (k == 2) c &= 0x1F;
    else if (k == 3) c &= 0x0F;
    else if (k == 4) c &= 0x07;
    for (size_t j = 1; j < k; j++) c = (c << 6) | (u[j] & 0x3F);
    *adv = k;
    return c;
}

void utf8_put(jsb *b, uint32_t cp) {
    char o[4];
    size_t k;
    if (cp < 0x80) {
        o[0] = (char)cp;
        k = 1;
    } else if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        k = 2;
    } else if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        k = 3;
    } else {
        o[0] = (char)(0xF0 | (cp >> 18));
        o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[3] = (char)(0x80 | (cp & 0x3F));
        k = 4;
    }
    jsb_put(b, o, k);
}

/* ----------------------------------------------------------------- values */
jval *jv_new(jarena *a, jv_type t) {
    jval *v = ja_alloc(a, sizeof *v);
    if (v) v->t = t;
    return v;
}

jval *jv_undef(jarena *a, const char *name) {
    jval *v = jv_new(a, JV_UNDEF);
    if (v) v->s = name;
    return v;
}

jval *jv_int(jarena *a, long long i) {
    jval *v = jv_new(a, JV_INT);
    if (v) v->i = i;
    return v;
}

jval *jv_float(jarena *a, double f) {
    jval *v = jv_new(a, JV_FLOAT);
    if (v) v->f = f;
    return v;
}

jval *jv_bool(jarena *a, int b) {
    jval *v = jv_new(a, JV_BOOL);
    if (v) v->i = b != 0;
    return v;
}

jval *jv_str_nocopy(jarena *a, const char *s, size_t n) {
    jval *v = jv_new(a, JV_STR);
    if (!v) return NULL;
    v->s = s;
    v->n = n;
    return v;
}

jval *jv_str(jarena *a, const char *s, size_t n) {
    char *c = ja_strndup(a, s, n);
    return c ? jv_str_nocopy(a, c, n) : NULL;
}

static int grow(jarena *a, jval *l, int with_vals) {
    if (l->len < l->cap) return 0;
    size_t nc = l->cap ? 2 * l->cap : 4;
    jval **it = ja_alloc(a, nc * sizeof *it);
    jval **vs = with_vals ? ja_alloc(a, nc * sizeof *vs) : NULL;
    if (!it || (with_vals && !vs)) return -1;
    if (l->len) {
        memcpy(it, l->items, l->len * sizeof *it);
        if (with_vals) memcpy(vs, l->vals, l->len * sizeof *vs);
    }
    l->items = it;
    if (with_vals) l->vals = vs;
    l->cap = nc;
    return 0;
}

int jv_push(jarena *a, jval *list, jval *item) {
    if (!item || grow(a, list, 0)) return -1;
    list->items[list->len++] = item;
    return 0;
}

jval *jv_dict_getv(const jval *d, const jval *key) {
    for (size_t i = 0; i < d->len; i++)
        if (jv_equal(d->items[i], key)) return d->vals[i];
    return NULL;
}

jval *jv_dict_get(const jval *d, const char *key, size_t n) {
    for (size_t i = 0; i < d->len; i++) {
        const jval *k = d->items[i];
        if (k->t == JV_STR && k->n == n && !memcmp(k->s, key, n)) return d->vals[i];
    }
    return NULL;
}

int jv_dict_put(jarena *a, jval *d, jval *key, jval *v) {
    if (!key || !v) return -1;
    for (size_t i = 0; i < d->len; i++)
        if (jv_equal(d->items[i], key)) {
            d->vals[i] = v;
            return 0;
        }
    if (grow(a, d, 1)) return -1;
    d->items[d->len] = key;
    d->vals[d->len++] = v;
    return 0;
}

int jv_truthy(const jval *v) {
    switch (v->t) {
    case JV_UNDEF:
    case JV_NONE: return 0;
    case JV_BOOL:
    case JV_INT: return v->i != 0;
    case JV_FLOAT: return v->f != 0;
    case JV_STR: return v->n > 0;
    case JV_LIST:
    case JV_DICT: return v->len > 0;
    default: return 1;
    }
}

static int is_num(const jval *v) { return v->t == JV_BOOL || v->t == JV_INT || v->t == JV_FLOAT; }

#define MAX_NEST 100 /* values nested deeper are compared / printed no further */

static int equal_d(const jval *a, const jval *b, int depth);

int jv_equal(const jval *a, const jval *b) { return equal_d(a, b, 0); }

static int equal_d(const jval *a, const jval *b, int depth) {
    if (depth > MAX_NEST) return a == b;
    if (is_num(a) && is_num(b)) {
        if (a->t != JV_FLOAT && b->t != JV_FLOAT) return a->i == b->i;
        double x = a->t == JV_FLOAT ? a->f : (double)a->i, y = b->t == JV_FLOAT ? b->f : (double)b->i;
        return x == y;
    }
    if (a->t != b->t) return 0;
    switch (a->t) {
    case JV_UNDEF:
    case JV_NONE: return 1;
    case JV_STR: return a->n == b->n && !memcmp(a->s, b->s, a->n);
    case JV_LIST:
        if (a->len != b->len || a->tuple != b->tuple) return 0;
        for (size_t i = 0; i < a->len; i++)
            if (!equal_d(a->items[i], b->items[i], depth + 1)) return 0;
        return 1;
    case JV_DICT:
        if (a->len != b->len) return 0;
        for (size_t i = 0; i < a->len; i++) {
            const jval *o = jv_dict_getv(b, a->items[i]);
            if (!o || !equal_d(a->vals[i], o, depth + 1)) return 0;
        }
        return 1;
    case JV_FUNC: return a->i == b->i;
    default: return a == b;
    }
}

const char *jv_type_name(const jval *v) {
    switch (v->t) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v->tuple ? "tuple" : "list";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_LOOP: return "LoopContext";
    case JV_MACRO: return "Macro";
    default: return "function";
    }
}

/* Python's repr(float): the shortest digits that read back the same. */
static void put_float(jsb *b, double f) {
    if (isnan(f)) {
        jsb_puts(b, "nan");
        return;
    }
    if (isinf(f)) {
        jsb_puts(b, f < 0 ? "-inf" : "inf");
        return;
    }
    char buf[64];
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*e", p - 1, f);
        if (strtod(buf, NULL) == f) break;
    }
    /* buf = d.ddde[+-]XX: rebuild as Python formats repr */
    char digits[32];
    int nd = 0, neg = buf[0] == '-';
    const char *q = buf + neg;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') digits[nd++] = *q;
    digits[nd] = '\0';
    int ex = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0') digits[--nd] = '\0';
    if (neg) jsb_putc(b, '-');
    if (ex < -4 || ex >= 16) {
        jsb_putc(b, digits[0]);
        if (nd > 1) {
            jsb_putc(b, '.');
            jsb_puts(b, digits + 1);
        }
        jsb_printf(b, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    } else if (ex < 0) {
        jsb_puts(b, "0.");
        for (int i = 0; i < -ex - 1; i++) jsb_putc(b, '0');
        jsb_puts(b, digits);
    } else {
        for (int i = 0; i <= ex; i++) jsb_putc(b, i < nd ? digits[i] : '0');
        jsb_putc(b, '.');
        if (nd > ex + 1) jsb_puts(b, digits + ex + 1);
        else jsb_putc(b, '0');
    }
}

static void repr_str(jsb *b, const char *s, size_t n) {
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    jsb_putc(b, q);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == (unsigned char)q || c == '\\') {
            jsb_putc(b, '\\');
            jsb_putc(b, (char)c);
        } else if (c == '\n') jsb_puts(b, "\\n");
        else if (c == '\r') jsb_puts(b, "\\r");
        else if (c == '\t') jsb_puts(b, "\\t");
        else if (c < 0x20 || c == 0x7F) jsb_printf(b, "\\x%02x", c);
        else jsb_putc(b, (char)c);
    }
    jsb_putc(b, q);
}

static void repr_d(jsb *b, const jval *v, int depth);

void jv_repr(jsb *b, const jval *v) { repr_d(b, v, 0); }

static void repr_d(jsb *b, const jval *v, int depth) {
    if (depth > MAX_NEST && (v->t == JV_LIST || v->t == JV_DICT || v->t == JV_NS)) {
        jsb_puts(b, "...");
        return;
    }
    switch (v->t) {
    case JV_STR: repr_str(b, v->s, v->n); return;
    case JV_LIST:
        jsb_putc(b, v->tuple ? '(' : '[');
        for (size_t i = 0; i < v->len; i++) {
            if (i) jsb_puts(b, ", ");
            repr_d(b, v->items[i], depth + 1);
        }
        if (v->tuple && v->len == 1) jsb_putc(b, ',');
        jsb_putc(b, v->tuple ? ')' : ']');
        return;
    case JV_DICT:
    case JV_NS:
        if (v->t == JV_NS) jsb_puts(b, "<Namespace ");
        jsb_putc(b, '{');
        for (size_t i = 0; i < v->len; i++) {
            if (i) jsb_puts(b, ", ");
            repr_d(b, v->items[i], depth + 1);
            jsb_puts(b, ": ");
            repr_d(b, v->vals[i], depth + 1);
        }
        jsb_putc(b, '}');
        if (v->t == JV_NS) jsb_putc(b, '>');
        return;
    default: jv_to_str(b, v);
    }
}

void jv_to_str(jsb *b, const jval *v) {
    switch (v->t) {
    case JV_UNDEF: return;
    case JV_NONE: jsb_puts(b, "None"); return;
    case JV_BOOL: jsb_puts(b, v->i ? "True" : "False"); return;
    case JV_INT: jsb_printf(b, "%lld", v->i); return;
    case JV_FLOAT: put_float(b, v->f); return;
    case JV_STR: jsb_put(b, v->s, v->n); return;
    case JV_FUNC: jsb_puts(b, "<built-in function>"); return;
    case JV_LOOP: jsb_printf(b, "<LoopContext %lld/%zu>", v->i + 1, v->len); return;
    case JV_MACRO: jsb_printf(b, "<Macro '%s'>", v->node->name); return;
    default: jv_repr(b, v);
    }
}

/* ------------------------------------------------------------------- JSON */
static void json_str(jsb *b, const char *s, size_t n) {
    jsb_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': jsb_puts(b, "\\\""); break;
        case '\\': jsb_puts(b, "\\\\"); break;
        case '\n': jsb_puts(b, "\\n"); break;
        case '\r': jsb_puts(b, "\\r"); break;
        case '\t': jsb_puts(b, "\\t"); break;
        case '\b': jsb_puts(b, "\\b"); break;
        case '\f': jsb_puts(b, "\\f"); break;
        default:
            if (c < 0x20) jsb_printf(b, "\\u%04x", c);
            else jsb_putc(b, (char)c);
        }
    }
    jsb_putc(b, '"');
}

static void json_nl(jsb *b, int indent, int depth) {
    jsb_putc(b, '\n');
    for (int i = 0; i < indent * depth; i++) jsb_putc(b, ' ');
}

static int json_key_cmp(const jval *a, const jval *b) {
    size_t n = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->s, b->s, n);
    return c ? c : (a->n > b->n) - (a->n < b->n);
}

static int json_val(jsb *b, const jval *v, int indent, int sort_keys, int depth, dms_err *err) {
    if (depth > MAX_NEST) return dms_errf(err, "tojson: value nested more than %d deep", MAX_NEST);
    switch (v->t) {
    case JV_NONE: jsb_puts(b, "null"); return 0;
    case JV_BOOL: jsb_puts(b, v->i ? "true" : "false"); return 0;
    case JV_INT: jsb_printf(b, "%lld", v->i); return 0;
    case JV_FLOAT:
        if (isnan(v->f)) jsb_puts(b, "NaN");
        else if (isinf(v->f)) jsb_puts(b, v->f < 0 ? "-Infinity" : "Infinity");
        else put_float(b, v->f);
        return 0;
    case JV_STR: json_str(b, v->s, v->n); return 0;
    case JV_LIST:
        if (v->len == 0) {
            jsb_puts(b, "[]");
            return 0;
        }
        jsb_putc(b, '[');
        for (size_t i = 0; i < v->len; i++) {
            if (i) jsb_puts(b, indent >= 0 ? "," : ", ");
            if (indent >= 0) json_nl(b, indent, depth + 1);
            if (json_val(b, v->items[i], indent, sort_keys, depth + 1, err)) return -1;
        }
        if (indent >= 0) json_nl(b, indent, depth);
        jsb_putc(b, ']');
        return 0;
    case JV_DICT: {
        if (v->len == 0) {
            jsb_puts(b, "{}");
            return 0;
        }
        size_t *ord = malloc(v->len * sizeof *ord);
        if (!ord) return dms_errf(err, "out of memory");
        for (size_t i = 0; i < v->len; i++) {
            ord[i] = i;
            if (v->items[i]->t != JV_STR) {
                free(ord);
                return dms_errf(err, "tojson: keys must be strings, not %s", jv_type_name(v->items[i]));
            }
        }
        if (sort_keys) /* insertion sort: dicts in templates are small */
            for (size_t i = 1; i < v->len; i++)
                for (size_t j = i; j > 0 && json_key_cmp(v->items[ord[j - 1]], v->items[ord[j]]) > 0; j--) {
                    size_t t = ord[j];
                    ord[j] = ord[j - 1];
                    ord[j - 1] = t;
                }
        jsb_putc(b, '{');
        for (size_t k = 0; k < v->len; k++) {
            size_t i = ord[k];
            if (k) jsb_puts(b, indent >= 0 ? "," : ", ");
            if (indent >= 0) json_nl(b, indent, depth + 1);
            json_str(b, v->items[i]->s, v->items[i]->n);
            jsb_puts(b, ": ");
            if (json_val(b, v->vals[i], indent, sort_keys, depth + 1, err)) {
                free(ord);
                return -1;
            }
        }
        free(ord);
        if (indent >= 0) json_nl(b, indent, depth);
        jsb_putc(b, '}');
        return 0;
    }
    default: return dms_errf(err, "tojson: object of type %s is not JSON serializable", jv_type_name(v));
    }
}

int jv_tojson(jsb *b, const jval *v, int indent, int sort_keys, dms_err *err) {
    return json_val(b, v, indent, sort_keys, 0, err);
}
