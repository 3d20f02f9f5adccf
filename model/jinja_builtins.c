/* jinja_builtins.c - the filters, tests, methods and global functions a chat
 * template can call, with the behaviour of Jinja's builtins and of the
 * Python str / dict methods they reach (strip with Python's whitespace,
 * split like str.split, ...), plus the globals transformers adds:
 * raise_exception (its message becomes the error), strftime_now (the
 * render's clock, injectable), namespace and dict. */
#include "model/jinja_impl.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

static const char *const FILTERS[] = {
    "abs", "capitalize", "count", "d", "default", "dictsort", "first", "float", "int", "items", "join", "last",
    "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace", "reverse", "safe", "select",
    "selectattr", "sort", "string", "title", "tojson", "trim", "unique", "upper", "wordcount",
};
static const char *const TESTS[] = {
    "!=", "<", "<=", "==", ">", ">=", "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "even",
    "false", "float", "ge", "gt", "in", "integer", "iterable", "le", "lower", "lt", "mapping", "ne", "none",
    "number", "odd", "sameas", "sequence", "string", "true", "undefined", "upper",
};

static int in_list(const char *const *l, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(l[i], name)) return 1;
    return 0;
}

int jinja_filter_known(const char *name) { return in_list(FILTERS, sizeof FILTERS / sizeof *FILTERS, name); }
int jinja_test_known(const char *name) { return in_list(TESTS, sizeof TESTS / sizeof *TESTS, name); }

static jval *fail(jctx *c, const char *fmt, const char *a, const char *b) {
    char buf[512];
    snprintf(buf, sizeof buf, fmt, a, b);
    dms_errf(c->err, "%s at line %d", buf, c->line);
    return NULL;
}

static jval *oom(jctx *c) {
    dms_errf(c->err, "out of memory");
    return NULL;
}

static jval *str_from(jctx *c, jsb *b) {
    size_t len;
    char *s = jsb_to_arena(b, c->a, &len);
    return s ? jv_str_nocopy(c->a, s, len) : oom(c);
}

static jval *to_str(jctx *c, const jval *v) {
    if (v->t == JV_STR) return (jval *)v;
    jsb b = {0};
    jv_to_str(&b, v);
    return str_from(c, &b);
}

static jval *kwarg(const char **kwn, jval **kwv, size_t nkw, const char *name) {
    for (size_t i = 0; i < nkw; i++)
        if (!strcmp(kwn[i], name)) return kwv[i];
    return NULL;
}

/* The argument at position pos or keyword name; NULL if neither. */
static jval *arg(jval **args, size_t n, size_t pos, const char **kwn, jval **kwv, size_t nkw, const char *name) {
    if (pos < n) return args[pos];
    return name ? kwarg(kwn, kwv, nkw, name) : NULL;
}

static int check_kw(jctx *c, const char *what, const char **kwn, size_t nkw, const char *const *allowed) {
    for (size_t i = 0; i < nkw; i++) {
        int ok = 0;
        for (const char *const *a = allowed; a && *a; a++) ok |= !strcmp(*a, kwn[i]);
        if (!ok) {
            fail(c, "unsupported argument '%s' of %s", kwn[i], what);
            return -1;
        }
    }
    return 0;
}

/* ----------------------------------------------------------- str helpers */

/* Is code point cp (at s[i], adv bytes) in chars? */
static int in_chars(const jval *chars, const char *s, size_t i, size_t adv) {
    for (size_t k = 0; k < chars->n;) {
        size_t ck = utf8_next(chars->s, chars->n, k) - k;
        if (ck == adv && !memcmp(chars->s + k, s + i, adv)) return 1;
        k += ck;
    }
    return 0;
}

/* Python str.strip / lstrip / rstrip; chars NULL or None = whitespace. */
static jval *py_strip(jctx *c, const jval *v, const jval *chars, int left, int right) {
    const char *s = v->s;
    size_t st = 0, en = v->n;
    int ws = !chars || chars->t == JV_NONE;
    if (left)
        while (st < en) {
            size_t adv = utf8_next(s, en, st) - st;
            int hit = ws ? py_space_at((const unsigned char *)s + st, en - st) == adv : in_chars(chars, s, st, adv);
            if (!hit) break;
            st += adv;
        }
    if (right)
        while (en > st) {
            size_t k = en - 1;
            while (k > st && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
            int hit = ws ? py_space_at((const unsigned char *)s + k, en - k) == en - k : in_chars(chars, s, k, en - k);
            if (!hit) break;
            en = k;
        }
    return jv_str_nocopy(c->a, s + st, en - st);
}

static jval *py_split(jctx *c, const jval *v, const jval *sep, long long maxsplit) {
    jval *l = jv_new(c->a, JV_LIST);
    if (!l) return oom(c);
    const char *s = v->s;
    size_t n = v->n;
    if (!sep || sep->t == JV_NONE) { /* runs of whitespace, no empty strings */
        size_t i = 0;
        long long splits = 0;
        for (;;) {
            size_t w;
            while (i < n && (w = py_space_at((const unsigned char *)s + i, n - i))) i += w;
            if (i >= n) break;
            size_t j = i;
            if (maxsplit >= 0 && splits >= maxsplit) {
                /* the rest, with trailing whitespace stripped */
                jval rest = {.t = JV_STR, .s = s + i, .n = n - i};
                jval *r = py_strip(c, &rest, NULL, 0, 1);
                if (!r || jv_push(c->a, l, r)) return oom(c);
                break;
            }
            while (j < n && !py_space_at((const unsigned char *)s + j, n - j)) j = utf8_next(s, n, j);
            if (jv_push(c->a, l, jv_str_nocopy(c->a, s + i, j - i))) return oom(c);
            splits++;
            i = j;
        }
        return l;
    }
    if (sep->t != JV_STR) return fail(c, "split: separator must be a string, not %s%s", jv_type_name(sep), "");
    if (sep->n == 0) return fail(c, "%s%s", "split: empty separator", "");
    size_t i = 0;
    long long splits = 0;
    for (;;) {
        const char *hit = NULL;
        if (maxsplit < 0 || splits < maxsplit)
            for (size_t k = i; k + sep->n <= n; k++)
                if (!memcmp(s + k, sep->s, sep->n)) {
                    hit = s + k;
                    break;
                }
        if (!hit) {
            if (jv_push(c->a, l, jv_str_nocopy(c->a, s + i, n - i))) return oom(c);
            return l;
        }
        size_t k = (size_t)(hit - s);
        if (jv_push(c->a, l, jv_str_nocopy(c->a, s + i, k - i))) return oom(c);
        i = k + sep->n;
        splits++;
    }
}

static jval *py_replace(jctx *c, const jval *v, const jval *old, const jval *new_, long long count) {
    if (old->t != JV_STR || new_->t != JV_STR) return fail(c, "%s%s", "replace: arguments must be strings", "");
    jsb b = {0};
    size_t i = 0;
    long long done = 0;
    if (old->n == 0) { /* Python inserts new between every character */
        while (count < 0 || done < count) {
            jsb_put(&b, new_->s, new_->n);
            done++;
            if (i >= v->n) break;
            size_t e = utf8_next(v->s, v->n, i);
            jsb_put(&b, v->s + i, e - i);
            i = e;
        }
        jsb_put(&b, v->s + i, v->n - i);
        return str_from(c, &b);
    }
    while (i < v->n) {
        if ((count < 0 || done < count) && i + old->n <= v->n && !memcmp(v->s + i, old->s, old->n)) {
            jsb_put(&b, new_->s, new_->n);
            i += old->n;
            done++;
        } else {
            jsb_putc(&b, v->s[i++]);
        }
    }
    return str_from(c, &b);
}

enum { CASE_UPPER, CASE_LOWER, CASE_CAPITALIZE, CASE_TITLE };

static jval *py_case(jctx *c, const jval *v, int mode) {
    jsb b = {0};
    int prev_cased = 0, first = 1;
    for (size_t i = 0; i < v->n;) {
        size_t adv;
        uint32_t cp = utf8_decode(v->s, v->n, i, &adv);
        utf8proc_int32_t r = (utf8proc_int32_t)cp;
        switch (mode) {
        case CASE_UPPER: r = utf8proc_toupper(r); break;
        case CASE_LOWER: r = utf8proc_tolower(r); break;
        case CASE_CAPITALIZE: r = first ? utf8proc_toupper(r) : utf8proc_tolower(r); break;
        default: r = prev_cased ? utf8proc_tolower(r) : utf8proc_toupper(r);
        }
        const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
        prev_cased = p->category == UTF8PROC_CATEGORY_LU || p->category == UTF8PROC_CATEGORY_LL ||
                     p->category == UTF8PROC_CATEGORY_LT;
        utf8_put(&b, (uint32_t)r);
        first = 0;
        i += adv;
    }
    return str_from(c, &b);
}

static int starts_or_ends(jctx *c, const jval *v, const jval *what, int end, int *out) {
    if (what->t == JV_LIST && what->tuple) {
        *out = 0;
        for (size_t i = 0; i < what->len && !*out; i++)
            if (starts_or_ends(c, v, what->items[i], end, out)) return -1;
        return 0;
    }
    if (what->t != JV_STR) {
        fail(c, "%s arg must be str or a tuple of str, not %s", end ? "endswith" : "startswith", jv_type_name(what));
        return -1;
    }
    *out = what->n <= v->n && !memcmp(v->s + (end ? v->n - what->n : 0), what->s, what->n);
    return 0;
}

static long long int_arg(const jval *v, long long dflt) {
    return v && (v->t == JV_INT || v->t == JV_BOOL) ? v->i : dflt;
}

/* ---------------------------------------------------------------- tests */

int jinja_test(jctx *c, const char *name, jval *v, jval **args, size_t n) {
    jval *a0 = n > 0 ? args[0] : NULL;
#define IS(x) (!strcmp(name, x))
    if (IS("defined")) return v->t != JV_UNDEF;
    if (IS("undefined")) return v->t == JV_UNDEF;
    if (IS("none")) return v->t == JV_NONE;
    if (IS("string")) return v->t == JV_STR;
    if (IS("boolean")) return v->t == JV_BOOL;
    if (IS("true")) return v->t == JV_BOOL && v->i;
    if (IS("false")) return v->t == JV_BOOL && !v->i;
    if (IS("integer")) return v->t == JV_INT;
    if (IS("float")) return v->t == JV_FLOAT;
    if (IS("number")) return v->t == JV_INT || v->t == JV_FLOAT || v->t == JV_BOOL;
    if (IS("mapping")) return v->t == JV_DICT;
    if (IS("iterable")) return v->t == JV_STR || v->t == JV_LIST || v->t == JV_DICT || v->t == JV_UNDEF;
    if (IS("sequence")) return v->t == JV_STR || v->t == JV_LIST || v->t == JV_DICT;
    if (IS("callable")) return v->t == JV_FUNC;
    if (IS("lower") || IS("upper")) {
        if (v->t != JV_STR) return 0;
        jval *t = py_case(c, v, IS("lower") ? CASE_LOWER : CASE_UPPER);
        return t ? jv_equal(t, v) : -1;
    }
    if (IS("odd") || IS("even") || IS("divisibleby")) {
        if (v->t != JV_INT && v->t != JV_BOOL) {
            fail(c, "test '%s' needs an integer, not %s", name, jv_type_name(v));
            return -1;
        }
        if (IS("divisibleby")) {
            long long d = int_arg(a0, 0);
            if (d == 0) {
                fail(c, "%s%s", "divisibleby 0", "");
                return -1;
            }
            return d == -1 || v->i % d == 0;
        }
        return (v->i % 2 != 0) == IS("odd");
    }
    if (!a0) {
        fail(c, "test '%s' needs an argument%s", name, "");
        return -1;
    }
    if (IS("==") || IS("eq") || IS("equalto")) return jv_equal(v, a0);
    if (IS("!=") || IS("ne")) return !jv_equal(v, a0);
    if (IS("sameas")) /* Python `is`: None, bools, and CPython's cached small ints */
        return v == a0 || (v->t == a0->t && (v->t == JV_NONE || (v->t == JV_BOOL && v->i == a0->i) ||
                                              (v->t == JV_INT && v->i == a0->i && v->i >= -5 && v->i <= 256)));
    if (IS("in")) {
        if (a0->t == JV_STR && v->t == JV_STR) {
            for (size_t i = 0; i + v->n <= a0->n; i++)
                if (!memcmp(a0->s + i, v->s, v->n)) return 1;
            return 0;
        }
        if (a0->t == JV_LIST) {
            for (size_t i = 0; i < a0->len; i++)
                if (jv_equal(v, a0->items[i])) return 1;
            return 0;
        }
        if (a0->t == JV_DICT) return jv_dict_getv(a0, v) != NULL;
        fail(c, "test 'in' needs a container, not %s%s", jv_type_name(a0), "");
        return -1;
    }
    /* ordering tests */
    int lt;
    if ((v->t == JV_INT || v->t == JV_FLOAT || v->t == JV_BOOL) && (a0->t == JV_INT || a0->t == JV_FLOAT || a0->t == JV_BOOL)) {
        double x = v->t == JV_FLOAT ? v->f : (double)v->i, y = a0->t == JV_FLOAT ? a0->f : (double)a0->i;
        lt = (x > y) - (x < y);
    } else if (v->t == JV_STR && a0->t == JV_STR) {
        size_t m = v->n < a0->n ? v->n : a0->n;
        lt = memcmp(v->s, a0->s, m);
        if (!lt) lt = (v->n > a0->n) - (v->n < a0->n);
    } else {
        fail(c, "test '%s' cannot compare %s", name, jv_type_name(v));
        return -1;
    }
    if (IS("<") || IS("lt")) return lt < 0;
    if (IS("<=") || IS("le")) return lt <= 0;
    if (IS(">") || IS("gt")) return lt > 0;
    return lt >= 0;
#undef IS
}

/* -------------------------------------------------------------- filters */

static jval *seq_of(jctx *c, jval *v, const char *filter) {
    if (v->t == JV_LIST) return v;
    jval *l = jv_new(c->a, JV_LIST);
    if (!l) return oom(c);
    if (v->t == JV_UNDEF) return l;
    if (v->t == JV_DICT) {
        for (size_t i = 0; i < v->len; i++)
            if (jv_push(c->a, l, v->items[i])) return oom(c);
        return l;
    }
    if (v->t == JV_STR) {
        for (size_t i = 0; i < v->n;) {
            size_t e = utf8_next(v->s, v->n, i);
            if (jv_push(c->a, l, jv_str(c->a, v->s + i, e - i))) return oom(c);
            i = e;
        }
        return l;
    }
    return fail(c, "filter '%s': '%s' object is not iterable", filter, jv_type_name(v));
}

static jval *attr_of(jctx *c, jval *item, const jval *attr) {
    jval *r = NULL;
    if (attr->t == JV_STR && (item->t == JV_DICT || item->t == JV_NS)) r = jv_dict_get(item, attr->s, attr->n);
    return r ? r : jv_undef(c->a, NULL);
}

/* Ordering of sort / dictsort / min / max: numbers, strings (lowercased
 * unless case_sensitive), sequences item by item; -2 when not comparable. */
static int order(jctx *c, const jval *a, const jval *b, int case_sensitive) {
    int an = a->t == JV_INT || a->t == JV_FLOAT || a->t == JV_BOOL, bn = b->t == JV_INT || b->t == JV_FLOAT || b->t == JV_BOOL;
    if (an && bn) {
        double x = a->t == JV_FLOAT ? a->f : (double)a->i, y = b->t == JV_FLOAT ? b->f : (double)b->i;
        return (x > y) - (x < y);
    }
    if (a->t == JV_STR && b->t == JV_STR) {
        const jval *x = a, *y = b;
        if (!case_sensitive) {
            x = py_case(c, a, CASE_LOWER);
            y = x ? py_case(c, b, CASE_LOWER) : NULL;
            if (!y) return -2;
        }
        size_t n = x->n < y->n ? x->n : y->n;
        int r = memcmp(x->s, y->s, n);
        if (!r) r = (x->n > y->n) - (x->n < y->n);
        return (r > 0) - (r < 0);
    }
    if (a->t == JV_LIST && b->t == JV_LIST) {
        for (size_t i = 0; i < a->len && i < b->len; i++) {
            int r = order(c, a->items[i], b->items[i], case_sensitive);
            if (r) return r;
        }
        return (a->len > b->len) - (a->len < b->len);
    }
    fail(c, "'<' not supported between instances of '%s' and '%s'", jv_type_name(a), jv_type_name(b));
    return -2;
}

/* A stable sort of seq's items (a new list) by key (attribute or the item itself). */
static jval *sorted(jctx *c, jval *seq, const jval *attr, int by_value, int reverse, int case_sensitive) {
    size_t n = seq->len;
    jval *l = jv_new(c->a, JV_LIST);
    jval **keys = ja_alloc(c->a, (n + 1) * sizeof *keys);
    if (!l || !keys) return oom(c);
    for (size_t i = 0; i < n; i++) {
        jval *it = seq->items[i];
        keys[i] = attr ? attr_of(c, it, attr) : by_value >= 0 && it->t == JV_LIST && it->len == 2 ? it->items[by_value] : it;
        if (jv_push(c->a, l, it)) return oom(c);
    }
    for (size_t i = 1; i < n; i++) /* insertion sort: stable, the lists are short */
        for (size_t j = i; j > 0; j--) {
            int r = order(c, keys[j - 1], keys[j], case_sensitive);
            if (r == -2) return NULL;
            if (reverse ? r >= 0 : r <= 0) break;
            jval *t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
            t = l->items[j];
            l->items[j] = l->items[j - 1];
            l->items[j - 1] = t;
        }
    return l;
}

/* select / reject / selectattr / rejectattr */
static jval *select_filter(jctx *c, const char *name, jval **args, size_t n) {
    int want = name[0] == 's';
    int by_attr = strstr(name, "attr") != NULL;
    jval *seq = args[0]->t == JV_NONE ? jv_new(c->a, JV_LIST) : seq_of(c, args[0], name); /* Jinja: `if seq` */
    if (!seq) return NULL;
    size_t k = 1;
    const jval *attr = NULL;
    if (by_attr) {
        if (n < 2) return fail(c, "filter '%s' needs an attribute name%s", name, "");
        attr = args[k++];
    }
    const char *test = NULL;
    char tbuf[64];
    if (k < n) {
        if (args[k]->t != JV_STR) return fail(c, "filter '%s': the test name must be a string%s", name, "");
        snprintf(tbuf, sizeof tbuf, "%.*s", (int)(args[k]->n < 63 ? args[k]->n : 63), args[k]->s);
        test = tbuf;
        k++;
        if (!jinja_test_known(test)) return fail(c, "unsupported test '%s' in filter '%s'", test, name);
    }
    jval *out = jv_new(c->a, JV_LIST);
    if (!out) return oom(c);
    for (size_t i = 0; i < seq->len; i++) {
        jval *x = attr ? attr_of(c, seq->items[i], attr) : seq->items[i];
        int r = test ? jinja_test(c, test, x, args + k, n - k) : jv_truthy(x);
        if (r < 0) return NULL;
        if (r == want && jv_push(c->a, out, seq->items[i])) return oom(c);
    }
    return out;
}

jval *jinja_filter(jctx *c, const char *name, jval **args, size_t n, const char **kwn, jval **kwv, size_t nkw) {
    jval *v = args[0];
    jarena *A = c->a;
#define IS(x) (!strcmp(name, x))
    if (IS("safe")) return v;
    if (IS("length") || IS("count")) {
        if (v->t == JV_UNDEF) return jv_int(A, 0);
        if (v->t == JV_STR) return jv_int(A, (long long)utf8_len(v->s, v->n));
        if (v->t == JV_LIST || v->t == JV_DICT || v->t == JV_NS) return jv_int(A, (long long)v->len);
        return fail(c, "object of type '%s' has no len()%s", jv_type_name(v), "");
    }
    if (IS("string")) return to_str(c, v);
    if (IS("trim")) {
        static const char *const ok[] = {"chars", NULL};
        if (check_kw(c, "trim", kwn, nkw, ok)) return NULL;
        jval *s = to_str(c, v);
        jval *chars = arg(args, n, 1, kwn, kwv, nkw, "chars");
        if (chars && chars->t != JV_STR && chars->t != JV_NONE) return fail(c, "%s%s", "trim: chars must be a string", "");
        return s ? py_strip(c, s, chars, 1, 1) : NULL;
    }
    if (IS("upper") || IS("lower") || IS("capitalize") || IS("title")) {
        jval *s = to_str(c, v);
        int mode = IS("upper") ? CASE_UPPER : IS("lower") ? CASE_LOWER : IS("capitalize") ? CASE_CAPITALIZE : CASE_TITLE;
        return s ? py_case(c, s, mode) : NULL;
    }
    if (IS("tojson")) {
        static const char *const ok[] = {"indent", "sort_keys", "ensure_ascii", "separators", NULL};
        if (check_kw(c, "tojson", kwn, nkw, ok)) return NULL;
        jval *ind = arg(args, n, 1, kwn, kwv, nkw, "indent");
        jval *ea = arg(args, n, 99, kwn, kwv, nkw, "ensure_ascii");
        jval *sep = arg(args, n, 99, kwn, kwv, nkw, "separators");
        jval *sk = arg(args, n, 99, kwn, kwv, nkw, "sort_keys");
        if (ea && jv_truthy(ea)) return fail(c, "%s%s", "unsupported argument 'ensure_ascii=True' of tojson", "");
        if (sep && sep->t != JV_NONE) return fail(c, "%s%s", "unsupported argument 'separators' of tojson", "");
        if (ind && ind->t != JV_NONE && ind->t != JV_INT) return fail(c, "%s%s", "tojson: indent must be an integer", "");
        jsb b = {0};
        if (jv_tojson(&b, v, ind && ind->t == JV_INT ? (int)ind->i : -1, sk && jv_truthy(sk), c->err)) {
            free(b.s);
            char msg[sizeof c->err->msg];
            snprintf(msg, sizeof msg, "%s", c->err->msg);
            return fail(c, "%s%s", msg, "");
        }
        return str_from(c, &b);
    }
    if (IS("join")) {
        static const char *const ok[] = {"d", "attribute", NULL};
        if (check_kw(c, "join", kwn, nkw, ok)) return NULL;
        jval *seq = seq_of(c, v, "join");
        jval *sep = arg(args, n, 1, kwn, kwv, nkw, "d");
        jval *at = arg(args, n, 2, kwn, kwv, nkw, "attribute");
        if (!seq) return NULL;
        jsb b = {0};
        for (size_t i = 0; i < seq->len; i++) {
            if (i && sep) jv_to_str(&b, sep);
            jv_to_str(&b, at ? attr_of(c, seq->items[i], at) : seq->items[i]);
        }
        return str_from(c, &b);
    }
    if (IS("items")) {
        jval *l = jv_new(A, JV_LIST);
        if (!l) return oom(c);
        if (v->t == JV_UNDEF) return l;
        if (v->t != JV_DICT && v->t != JV_NS) return fail(c, "filter 'items' needs a mapping, not %s%s", jv_type_name(v), "");
        for (size_t i = 0; i < v->len; i++) {
            jval *t = jv_new(A, JV_LIST);
            if (!t || jv_push(A, t, v->items[i]) || jv_push(A, t, v->vals[i]) || jv_push(A, l, t)) return oom(c);
            t->tuple = 1;
        }
        return l;
    }
    if (IS("select") || IS("reject") || IS("selectattr") || IS("rejectattr")) return select_filter(c, name, args, n);
    if (IS("map")) {
        jval *seq = v->t == JV_NONE ? jv_new(A, JV_LIST) : seq_of(c, v, "map");
        if (!seq) return NULL;
        jval *at = kwarg(kwn, kwv, nkw, "attribute");
        jval *dflt = kwarg(kwn, kwv, nkw, "default");
        jval *out = jv_new(A, JV_LIST);
        if (!out) return oom(c);
        if (at) {
            for (size_t i = 0; i < seq->len; i++) {
                jval *x = attr_of(c, seq->items[i], at);
                if (x->t == JV_UNDEF && dflt) x = dflt;
                if (jv_push(A, out, x)) return oom(c);
            }
            return out;
        }
        if (n < 2 || args[1]->t != JV_STR) return fail(c, "%s%s", "filter 'map' needs a filter name or attribute=", "");
        char fname[64];
        snprintf(fname, sizeof fname, "%.*s", (int)(args[1]->n < 63 ? args[1]->n : 63), args[1]->s);
        if (!jinja_filter_known(fname)) return fail(c, "unsupported filter '%s'%s", fname, "");
        for (size_t i = 0; i < seq->len; i++) {
            jval **fa = ja_alloc(A, (n > 1 ? n - 1 : 1) * sizeof *fa);
            if (!fa) return oom(c);
            fa[0] = seq->items[i];
            for (size_t k = 2; k < n; k++) fa[k - 1] = args[k];
            jval *r = jinja_filter(c, fname, fa, n - 1, NULL, NULL, 0);
            if (!r || jv_push(A, out, r)) return r ? oom(c) : NULL;
        }
        return out;
    }
    if (IS("sort") || IS("dictsort") || IS("min") || IS("max")) {
        static const char *const ok[] = {"reverse", "case_sensitive", "attribute", "by", NULL};
        if (check_kw(c, name, kwn, nkw, ok)) return NULL;
        int dict = IS("dictsort"), mm = IS("min") || IS("max");
        jval *rev = mm ? NULL : arg(args, n, dict ? 3 : 1, kwn, kwv, nkw, "reverse");
        jval *cs = arg(args, n, mm ? 1 : dict ? 1 : 2, kwn, kwv, nkw, "case_sensitive");
        jval *at = dict ? NULL : arg(args, n, mm ? 2 : 3, kwn, kwv, nkw, "attribute");
        jval *by = dict ? arg(args, n, 2, kwn, kwv, nkw, "by") : NULL;
        jval *seq;
        int by_value = -1;
        if (dict) {
            if (v->t != JV_DICT) return fail(c, "filter 'dictsort' needs a mapping, not %s%s", jv_type_name(v), "");
            jval *f[1] = {v};
            seq = jinja_filter(c, "items", f, 1, NULL, NULL, 0);
            by_value = by && by->t == JV_STR && by->n == 5 && !memcmp(by->s, "value", 5) ? 1 : 0;
        } else {
            seq = seq_of(c, v, name);
        }
        if (!seq) return NULL;
        jval *l = sorted(c, seq, at, by_value, rev && jv_truthy(rev), cs && jv_truthy(cs));
        if (!l || !mm) return l;
        if (!l->len) return jv_undef(A, NULL);
        return l->items[IS("min") ? 0 : l->len - 1];
    }
    if (IS("default") || IS("d")) {
        jval *dv = arg(args, n, 1, kwn, kwv, nkw, "default_value");
        jval *boolean = arg(args, n, 2, kwn, kwv, nkw, "boolean");
        if (!dv) dv = jv_str_nocopy(A, "", 0);
        int use = v->t == JV_UNDEF || (boolean && jv_truthy(boolean) && !jv_truthy(v));
        return use ? dv : v;
    }
    if (IS("first") || IS("last")) {
        jval *seq = seq_of(c, v, name);
        if (!seq) return NULL;
        if (!seq->len) return jv_undef(A, NULL);
        return seq->items[IS("first") ? 0 : seq->len - 1];
    }
    if (IS("list")) {
        jval *seq = seq_of(c, v, "list");
        if (!seq) return NULL;
        jval *l = jv_new(A, JV_LIST);
        if (!l) return oom(c);
        for (size_t i = 0; i < seq->len; i++)
            if (jv_push(A, l, seq->items[i])) return oom(c);
        return l;
    }
    if (IS("reverse")) {
        if (v->t == JV_STR) {
            jsb b = {0};
            size_t i = v->n;
            while (i > 0) {
                size_t k = i - 1;
                while (k > 0 && ((unsigned char)v->s[k] & 0xC0) == 0x80) k--;
                jsb_put(&b, v->s + k, i - k);
                i = k;
            }
            return str_from(c, &b);
        }
        jval *seq = seq_of(c, v, "reverse");
        if (!seq) return NULL;
        jval *l = jv_new(A, JV_LIST);
        if (!l) return oom(c);
        for (size_t i = seq->len; i > 0; i--)
            if (jv_push(A, l, seq->items[i - 1])) return oom(c);
        return l;
    }
    if (IS("unique")) {
        jval *seq = seq_of(c, v, "unique");
        if (!seq) return NULL;
        jval *l = jv_new(A, JV_LIST);
        if (!l) return oom(c);
        for (size_t i = 0; i < seq->len; i++) {
            int seen = 0;
            for (size_t k = 0; k < l->len && !seen; k++) seen = jv_equal(l->items[k], seq->items[i]);
            if (!seen && jv_push(A, l, seq->items[i])) return oom(c);
        }
        return l;
    }
    if (IS("replace")) {
        jval *s = to_str(c, v);
        if (!s) return NULL;
        if (n < 3) return fail(c, "%s%s", "filter 'replace' needs old and new", "");
        return py_replace(c, s, args[1], args[2], int_arg(n > 3 ? args[3] : NULL, -1));
    }
    if (IS("int")) {
        if (v->t == JV_INT) return v;
        if (v->t == JV_BOOL) return jv_int(A, v->i);
        if (v->t == JV_FLOAT) return jv_int(A, v->f > -9.2e18 && v->f < 9.2e18 ? (long long)v->f : 0);
        if (v->t == JV_STR) {
            char buf[64];
            snprintf(buf, sizeof buf, "%.*s", (int)(v->n < 63 ? v->n : 63), v->s);
            char *e;
            long long r = strtoll(buf, &e, 10);
            return jv_int(A, *e && *e != ' ' ? 0 : r);
        }
        return jv_int(A, 0);
    }
    if (IS("float")) {
        if (v->t == JV_FLOAT) return v;
        if (v->t == JV_INT || v->t == JV_BOOL) return jv_float(A, (double)v->i);
        if (v->t == JV_STR) {
            char buf[64];
            snprintf(buf, sizeof buf, "%.*s", (int)(v->n < 63 ? v->n : 63), v->s);
            return jv_float(A, strtod(buf, NULL));
        }
        return jv_float(A, 0);
    }
    if (IS("abs")) {
        if (v->t == JV_INT || v->t == JV_BOOL) {
            if (v->i == LLONG_MIN) return fail(c, "%s%s", "integer overflow (beyond 64 bits)", "");
            return jv_int(A, v->i < 0 ? -v->i : v->i);
        }
        if (v->t == JV_FLOAT) return jv_float(A, fabs(v->f));
        return fail(c, "bad operand type for abs(): '%s'%s", jv_type_name(v), "");
    }
    if (IS("wordcount")) {
        jval *s = to_str(c, v);
        jval *w = s ? py_split(c, s, NULL, -1) : NULL;
        return w ? jv_int(A, (long long)w->len) : NULL;
    }
#undef IS
    return fail(c, "unsupported filter '%s'%s", name, "");
}

/* -------------------------------------------------------------- methods */

jval *jinja_method(jctx *c, jval *obj, const char *name, jval **args, size_t n, const char **kwn, jval **kwv,
                   size_t nkw) {
    jarena *A = c->a;
#define IS(x) (!strcmp(name, x))
    if (obj->t == JV_STR) {
        if (IS("startswith") || IS("endswith")) {
            if (n < 1) return fail(c, "%s() takes at least 1 argument%s", name, "");
            if (n > 1) return fail(c, "unsupported start/end arguments of %s()%s", name, "");
            int r;
            if (starts_or_ends(c, obj, args[0], IS("endswith"), &r)) return NULL;
            return jv_bool(A, r);
        }
        if (IS("strip") || IS("lstrip") || IS("rstrip")) {
            jval *chars = n > 0 ? args[0] : NULL;
            if (chars && chars->t != JV_STR && chars->t != JV_NONE)
                return fail(c, "%s arg must be None or str%s", name, "");
            return py_strip(c, obj, chars, !IS("rstrip"), !IS("lstrip"));
        }
        if (IS("split")) {
            static const char *const ok[] = {"sep", "maxsplit", NULL};
            if (check_kw(c, "split", kwn, nkw, ok)) return NULL;
            jval *sep = arg(args, n, 0, kwn, kwv, nkw, "sep");
            jval *ms = arg(args, n, 1, kwn, kwv, nkw, "maxsplit");
            return py_split(c, obj, sep, int_arg(ms, -1));
        }
        if (IS("replace")) {
            if (n < 2) return fail(c, "%s%s", "replace() takes at least 2 arguments", "");
            return py_replace(c, obj, args[0], args[1], int_arg(n > 2 ? args[2] : NULL, -1));
        }
        if (IS("upper")) return py_case(c, obj, CASE_UPPER);
        if (IS("lower")) return py_case(c, obj, CASE_LOWER);
        if (IS("capitalize")) return py_case(c, obj, CASE_CAPITALIZE);
        if (IS("title")) return py_case(c, obj, CASE_TITLE);
        if (IS("find") || IS("count")) {
            if (n < 1 || args[0]->t != JV_STR) return fail(c, "%s() needs a string argument%s", name, "");
            const jval *sub = args[0];
            long long cnt = 0;
            for (size_t i = 0; i + sub->n <= obj->n;) {
                if (!memcmp(obj->s + i, sub->s, sub->n)) {
                    if (IS("find")) return jv_int(A, (long long)utf8_len(obj->s, i));
                    cnt++;
                    i += sub->n ? sub->n : 1;
                } else {
                    i++;
                }
            }
            if (IS("find")) return jv_int(A, -1);
            return jv_int(A, sub->n ? cnt : (long long)utf8_len(obj->s, obj->n) + 1);
        }
        if (IS("join")) {
            if (n < 1) return fail(c, "%s%s", "join() takes exactly one argument", "");
            jval *seq = seq_of(c, args[0], "join");
            if (!seq) return NULL;
            jsb b = {0};
            for (size_t i = 0; i < seq->len; i++) {
                if (seq->items[i]->t != JV_STR) {
                    free(b.s);
                    return fail(c, "sequence item %s: expected str instance, %s found", "", jv_type_name(seq->items[i]));
                }
                if (i) jsb_put(&b, obj->s, obj->n);
                jsb_put(&b, seq->items[i]->s, seq->items[i]->n);
            }
            return str_from(c, &b);
        }
        if (IS("isspace") || IS("isdigit") || IS("isalpha")) {
            if (!obj->n) return jv_bool(A, 0);
            for (size_t i = 0; i < obj->n;) {
                size_t adv;
                uint32_t cp = utf8_decode(obj->s, obj->n, i, &adv);
                int ok;
                if (IS("isspace")) ok = py_space_at((const unsigned char *)obj->s + i, obj->n - i) == adv;
                else {
                    const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
                    ok = IS("isdigit") ? p->category == UTF8PROC_CATEGORY_ND
                                       : (p->category >= UTF8PROC_CATEGORY_LU && p->category <= UTF8PROC_CATEGORY_LO);
                }
                if (!ok) return jv_bool(A, 0);
                i += adv;
            }
            return jv_bool(A, 1);
        }
    } else if (obj->t == JV_DICT) {
        if (IS("items") || IS("keys") || IS("values")) {
            jval *l = jv_new(A, JV_LIST);
            if (!l) return oom(c);
            for (size_t i = 0; i < obj->len; i++) {
                jval *x;
                if (IS("items")) {
                    x = jv_new(A, JV_LIST);
                    if (!x || jv_push(A, x, obj->items[i]) || jv_push(A, x, obj->vals[i])) return oom(c);
                    x->tuple = 1;
                } else {
                    x = IS("keys") ? obj->items[i] : obj->vals[i];
                }
                if (jv_push(A, l, x)) return oom(c);
            }
            return l;
        }
        if (IS("get")) {
            if (n < 1) return fail(c, "%s%s", "get() takes at least 1 argument", "");
            jval *r = jv_dict_getv(obj, args[0]);
            return r ? r : n > 1 ? args[1] : jv_new(A, JV_NONE);
        }
    }
#undef IS
    return fail(c, "unsupported method '%s' on %s", name, jv_type_name(obj));
}

/* -------------------------------------------------------------- globals */

jval *jinja_global(jarena *a, const char *name) {
    static const struct {
        const char *name;
        jfunc f;
    } G[] = {{"range", JF_RANGE}, {"namespace", JF_NAMESPACE}, {"raise_exception", JF_RAISE},
             {"strftime_now", JF_STRFTIME}, {"dict", JF_DICT}};
    for (size_t i = 0; i < sizeof G / sizeof *G; i++)
        if (!strcmp(G[i].name, name)) {
            jval *v = jv_new(a, JV_FUNC);
            if (v) v->i = G[i].f;
            return v;
        }
    return NULL;
}

jval *jinja_call_func(jctx *c, jval *fn, jval **args, size_t n, const char **kwn, jval **kwv, size_t nkw) {
    jarena *A = c->a;
    switch ((jfunc)fn->i) {
    case JF_RANGE: {
        long long st = 0, en, step = 1;
        for (size_t i = 0; i < n; i++)
            if (args[i]->t != JV_INT && args[i]->t != JV_BOOL) return fail(c, "range() needs integers, not %s%s", jv_type_name(args[i]), "");
        if (n == 1) en = args[0]->i;
        else if (n == 2 || n == 3) {
            st = args[0]->i;
            en = args[1]->i;
            if (n == 3) step = args[2]->i;
        } else return fail(c, "%s%s", "range() takes 1 to 3 arguments", "");
        if (step == 0) return fail(c, "%s%s", "range() step must not be zero", "");
        double span = step > 0 ? ((double)en - (double)st) / (double)step : ((double)st - (double)en) / -(double)step;
        if (span > 100000) return fail(c, "%s%s", "range() of more than 100000 numbers", "");
        long long count = span <= 0 ? 0 : (long long)ceil(span);
        jval *l = jv_new(A, JV_LIST);
        if (!l) return oom(c);
        for (long long k = 0; k < count; k++) {
            long long x;
            if (__builtin_mul_overflow(k, step, &x) || __builtin_add_overflow(st, x, &x) || (step > 0 ? x >= en : x <= en))
                break;
            if (jv_push(A, l, jv_int(A, x))) return oom(c);
        }
        return l;
    }
    case JF_NAMESPACE:
    case JF_DICT: {
        jval *d = jv_new(A, fn->i == JF_NAMESPACE ? JV_NS : JV_DICT);
        if (!d) return oom(c);
        for (size_t i = 0; i < n; i++) {
            if (args[i]->t != JV_DICT) return fail(c, "%s() takes keyword arguments or a dict%s", fn->i == JF_NAMESPACE ? "namespace" : "dict", "");
            for (size_t k = 0; k < args[i]->len; k++)
                if (jv_dict_put(A, d, args[i]->items[k], args[i]->vals[k])) return oom(c);
        }
        for (size_t i = 0; i < nkw; i++) {
            if (fn->i == JF_NAMESPACE && kwn[i][0] == '_')
                return fail(c, "chat templates cannot store underscore-prefixed attributes on a namespace ('%s')%s", kwn[i], "");
            if (dms_jinja_dict_set(c->env, d, kwn[i], kwv[i])) return oom(c);
        }
        return d;
    }
    case JF_RAISE: {
        jsb b = {0};
        if (n > 0) jv_to_str(&b, args[0]);
        dms_errf(c->err, "%s (raise_exception at line %d)", b.s ? b.s : "", c->line);
        free(b.s);
        return NULL;
    }
    case JF_STRFTIME: {
        if (n < 1 || args[0]->t != JV_STR) return fail(c, "%s%s", "strftime_now() needs a format string", "");
        time_t now = c->env->have_now ? c->env->now : time(NULL);
        struct tm tmv;
        if (!localtime_r(&now, &tmv)) return fail(c, "%s%s", "strftime_now(): no local time", "");
        char fmt[256], out[512];
        snprintf(fmt, sizeof fmt, "%.*s", (int)(args[0]->n < 255 ? args[0]->n : 255), args[0]->s);
        size_t k = strftime(out, sizeof out, fmt, &tmv);
        if (k == 0 && fmt[0]) return fail(c, "%s%s", "strftime_now(): the formatted date is too long", "");
        return jv_str(A, out, k);
    }
    }
    return fail(c, "%s%s", "unknown function", "");
}
