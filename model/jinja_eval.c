/* jinja_eval.c - renders a parsed template (jinja_parse.c): evaluates
 * expressions with Python / Jinja semantics (undefined values print as ""
 * and are falsy, but arithmetic, attribute access or calls on them fail as
 * in Jinja's default Undefined), runs statements with Jinja's scoping (a
 * for-loop iteration is a fresh scope over the enclosing one, `if` opens
 * none, so `set` inside a loop does not leak out; namespace() objects carry
 * state out of loops), and writes the output. Also the public value API of
 * jinja.h. */
#include "model/jinja_impl.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct scope scope;
struct scope {
    scope *parent;
    jval *vars; /* DICT */
};

typedef struct {
    jctx c;
    jsb out;
    int depth;
    long long steps; /* loop iterations so far: a runaway template is stopped */
    scope *top;      /* the template's scope: macros run in a child of it */
} renderer;

#define MAX_STEPS 1000000LL        /* loop iterations per render */
#define MAX_TEXT ((size_t)1 << 28) /* bytes of one string / of the output */

enum { R_OK = 0, R_ERR = -1, R_BREAK = 1, R_CONTINUE = 2 };

static jval *eval(renderer *R, scope *s, const jnode *x);
static jval *call_macro(renderer *R, scope *s, const jval *m, const jnode *call);

static jval *err_at(renderer *R, int line, const char *fmt, const char *a, const char *b) {
    char buf[512];
    snprintf(buf, sizeof buf, fmt, a, b);
    dms_errf(R->c.err, "%s at line %d", buf, line);
    return NULL;
}

static jval *oom(renderer *R) {
    dms_errf(R->c.err, "out of memory");
    return NULL;
}

static jval *lookup(renderer *R, scope *s, const char *name) {
    size_t n = strlen(name);
    for (scope *p = s; p; p = p->parent) {
        jval *v = jv_dict_get(p->vars, name, n);
        if (v) return v;
    }
    jval *v = jv_dict_get(R->c.env->vars, name, n);
    if (v) return v;
    v = jinja_global(R->c.a, name);
    return v ? v : jv_undef(R->c.a, name);
}

static int assign(renderer *R, scope *s, const char *name, jval *v) {
    jval *k = jv_str_nocopy(R->c.a, name, strlen(name));
    return k && v && jv_dict_put(R->c.a, s->vars, k, v) == 0 ? 0 : -1;
}

static jval *undefined_error(renderer *R, const jval *u, int line) {
    if (u->s) return err_at(R, line, "'%s' is undefined%s", u->s, "");
    return err_at(R, line, "%s%s", "undefined value", "");
}

/* obj.name (Jinja: attribute first, then item; dict keys are the attributes
 * of a message) */
/* loop.index0, loop.first, ... */
static jval *loop_attr(renderer *R, const jval *lp, const char *name) {
    jarena *A = R->c.a;
    long long i = lp->i, n = (long long)lp->len;
    if (!strcmp(name, "index0")) return jv_int(A, i);
    if (!strcmp(name, "index")) return jv_int(A, i + 1);
    if (!strcmp(name, "revindex0")) return jv_int(A, n - i - 1);
    if (!strcmp(name, "revindex")) return jv_int(A, n - i);
    if (!strcmp(name, "first")) return jv_bool(A, i == 0);
    if (!strcmp(name, "last")) return jv_bool(A, i + 1 == n);
    if (!strcmp(name, "length")) return jv_int(A, n);
    if (!strcmp(name, "depth")) return jv_int(A, 1);
    if (!strcmp(name, "depth0")) return jv_int(A, 0);
    if (!strcmp(name, "previtem")) return i > 0 ? lp->items[i - 1] : jv_undef(A, name);
    if (!strcmp(name, "nextitem")) return i + 1 < n ? lp->items[i + 1] : jv_undef(A, name);
    return jv_undef(A, name);
}

static jval *get_attr(renderer *R, jval *obj, const char *name, int line) {
    if (obj->t == JV_UNDEF) return undefined_error(R, obj, line);
    if (name[0] == '_') return jv_undef(R->c.a, name); /* the sandbox hides these */
    if (obj->t == JV_LOOP) return loop_attr(R, obj, name);
    if (obj->t == JV_DICT || obj->t == JV_NS) {
        jval *v = jv_dict_get(obj, name, strlen(name));
        return v ? v : jv_undef(R->c.a, name);
    }
    return jv_undef(R->c.a, name);
}

static int norm_index(long long i, size_t len, size_t *out) {
    if (i < 0) i += (long long)len;
    if (i < 0 || (size_t)i >= len) return -1;
    *out = (size_t)i;
    return 0;
}

static jval *get_item(renderer *R, jval *obj, jval *key, int line) {
    if (obj->t == JV_UNDEF) return undefined_error(R, obj, line);
    if (obj->t == JV_DICT || obj->t == JV_NS) {
        jval *v = jv_dict_getv(obj, key);
        if (v) return v;
        return jv_undef(R->c.a, key->t == JV_STR ? ja_strndup(R->c.a, key->s, key->n) : NULL);
    }
    if ((obj->t == JV_LIST || obj->t == JV_STR) && (key->t == JV_INT || key->t == JV_BOOL)) {
        size_t i;
        if (obj->t == JV_LIST) {
            if (norm_index(key->i, obj->len, &i)) return jv_undef(R->c.a, NULL);
            return obj->items[i];
        }
        size_t cl = utf8_len(obj->s, obj->n);
        if (norm_index(key->i, cl, &i)) return jv_undef(R->c.a, NULL);
        size_t b = 0;
        for (size_t k = 0; k < i; k++) b = utf8_next(obj->s, obj->n, b);
        size_t e = utf8_next(obj->s, obj->n, b);
        return jv_str(R->c.a, obj->s + b, e - b);
    }
    if (key->t == JV_STR) return get_attr(R, obj, ja_strndup(R->c.a, key->s, key->n), line);
    return jv_undef(R->c.a, NULL);
}

/* Python slice semantics over n elements */
static jval *slice(renderer *R, jval *obj, jval *lo, jval *hi, jval *st, int line) {
    if (obj->t == JV_UNDEF) return undefined_error(R, obj, line);
    if (obj->t != JV_LIST && obj->t != JV_STR)
        return err_at(R, line, "cannot slice a %s%s", jv_type_name(obj), "");
    for (jval *p[3] = {lo, hi, st}, **q = p; q < p + 3; q++)
        if (*q && (*q)->t != JV_NONE && (*q)->t != JV_INT && (*q)->t != JV_BOOL)
            return err_at(R, line, "slice indices must be integers, not %s%s", jv_type_name(*q), "");
    long long step = st && st->t != JV_NONE ? st->i : 1;
    if (step == 0) return err_at(R, line, "%s%s", "slice step cannot be zero", "");
    size_t n = obj->t == JV_LIST ? obj->len : utf8_len(obj->s, obj->n);
    long long N = (long long)n, a, b;
    if (!lo || lo->t == JV_NONE) a = step > 0 ? 0 : N - 1;
    else {
        a = lo->i < 0 ? lo->i + N : lo->i;
        if (a < 0) a = step > 0 ? 0 : -1;
        if (a >= N) a = step > 0 ? N : N - 1;
    }
    if (!hi || hi->t == JV_NONE) b = step > 0 ? N : -1;
    else {
        b = hi->i < 0 ? hi->i + N : hi->i;
        if (b < 0) b = step > 0 ? 0 : -1;
        if (b >= N) b = step > 0 ? N : N - 1;
    }
    /* how many items: counted first, so that i never steps past the ends */
    long long count;
    if (step > 0) count = b > a ? (b - a - 1) / step + 1 : 0;
    else count = a > b ? (step == LLONG_MIN ? 1 : (a - b - 1) / -step + 1) : 0;
    if (obj->t == JV_LIST) {
        jval *r = jv_new(R->c.a, JV_LIST);
        if (!r) return oom(R);
        r->tuple = obj->tuple;
        for (long long k = 0; k < count; k++)
            if (jv_push(R->c.a, r, obj->items[a + k * step])) return oom(R);
        return r;
    }
    /* strings: code point offsets */
    size_t *off = malloc((n + 1) * sizeof *off);
    if (!off) return oom(R);
    for (size_t i = 0, p = 0; i <= n; i++) {
        off[i] = p;
        if (i < n) p = utf8_next(obj->s, obj->n, p);
    }
    jsb sb = {0};
    for (long long k = 0; k < count; k++) {
        long long i = a + k * step;
        jsb_put(&sb, obj->s + off[i], off[i + 1] - off[i]);
    }
    free(off);
    size_t len;
    char *s = jsb_to_arena(&sb, R->c.a, &len);
    return s ? jv_str_nocopy(R->c.a, s, len) : oom(R);
}

static int is_numeric(const jval *v) { return v->t == JV_INT || v->t == JV_FLOAT || v->t == JV_BOOL; }
static double num(const jval *v) { return v->t == JV_FLOAT ? v->f : (double)v->i; }

static jval *concat_seq(renderer *R, jval *a, jval *b) {
    if (a->t == JV_STR) {
        char *s = ja_alloc(R->c.a, a->n + b->n + 1);
        if (!s) return oom(R);
        memcpy(s, a->s, a->n);
        memcpy(s + a->n, b->s, b->n);
        return jv_str_nocopy(R->c.a, s, a->n + b->n);
    }
    jval *r = jv_new(R->c.a, JV_LIST);
    if (!r) return oom(R);
    r->tuple = a->tuple;
    for (size_t i = 0; i < a->len; i++)
        if (jv_push(R->c.a, r, a->items[i])) return oom(R);
    for (size_t i = 0; i < b->len; i++)
        if (jv_push(R->c.a, r, b->items[i])) return oom(R);
    return r;
}

static jval *repeat(renderer *R, jval *seq, long long k, int line) {
    size_t unit = seq->t == JV_STR ? seq->n : seq->len * sizeof(jval *);
    if (k > 0 && unit > 0 && (unsigned long long)k > MAX_TEXT / unit)
        return err_at(R, line, "%s%s", "sequence repeated into more than 256 MiB", "");
    if (seq->t == JV_STR) {
        jsb sb = {0};
        for (long long i = 0; i < k; i++) jsb_put(&sb, seq->s, seq->n);
        size_t len;
        char *s = jsb_to_arena(&sb, R->c.a, &len);
        return s ? jv_str_nocopy(R->c.a, s, len) : oom(R);
    }
    jval *r = jv_new(R->c.a, JV_LIST);
    if (!r) return oom(R);
    for (long long i = 0; i < k; i++)
        for (size_t j = 0; j < seq->len; j++)
            if (jv_push(R->c.a, r, seq->items[j])) return oom(R);
    return r;
}

static jval *int_overflow(renderer *R, int line) {
    return err_at(R, line, "%s%s", "integer overflow (beyond 64 bits)", "");
}

static const char *op_sym(jop op) {
    static const char *const s[] = {"+", "-", "*", "/", "//", "%", "**", "~", "==", "!=", "<", "<=", ">", ">=", "in", "not in"};
    return s[op];
}

static jval *binop(renderer *R, jop op, jval *a, jval *b, int line) {
    if (op == JOP_CONCAT) {
        jsb sb = {0};
        jv_to_str(&sb, a);
        jv_to_str(&sb, b);
        size_t len;
        char *s = jsb_to_arena(&sb, R->c.a, &len);
        return s ? jv_str_nocopy(R->c.a, s, len) : oom(R);
    }
    if (a->t == JV_UNDEF) return undefined_error(R, a, line);
    if (b->t == JV_UNDEF) return undefined_error(R, b, line);
    if (is_numeric(a) && is_numeric(b)) {
        int fl = a->t == JV_FLOAT || b->t == JV_FLOAT;
        double x = num(a), y = num(b);
        long long i = a->i, j = b->i, r;
        switch (op) {
        case JOP_ADD:
            if (fl) return jv_float(R->c.a, x + y);
            if (__builtin_add_overflow(i, j, &r)) return int_overflow(R, line);
            return jv_int(R->c.a, r);
        case JOP_SUB:
            if (fl) return jv_float(R->c.a, x - y);
            if (__builtin_sub_overflow(i, j, &r)) return int_overflow(R, line);
            return jv_int(R->c.a, r);
        case JOP_MUL:
            if (fl) return jv_float(R->c.a, x * y);
            if (__builtin_mul_overflow(i, j, &r)) return int_overflow(R, line);
            return jv_int(R->c.a, r);
        case JOP_DIV:
            if (y == 0) return err_at(R, line, "%s%s", "division by zero", "");
            return jv_float(R->c.a, x / y);
        case JOP_FLOORDIV:
        case JOP_MOD:
            if (y == 0) return err_at(R, line, "%s%s", "division by zero", "");
            if (fl) {
                double q = floor(x / y);
                return jv_float(R->c.a, op == JOP_FLOORDIV ? q : x - q * y);
            } else {
                if (j == -1) { /* i / -1 overflows for the smallest i */
                    if (op == JOP_MOD) return jv_int(R->c.a, 0);
                    if (__builtin_sub_overflow(0LL, i, &r)) return int_overflow(R, line);
                    return jv_int(R->c.a, r);
                }
                long long q = i / j;
                if ((i % j != 0) && ((i < 0) != (j < 0))) q--;
                return jv_int(R->c.a, op == JOP_FLOORDIV ? q : i - q * j);
            }
        case JOP_POW:
            if (!fl && j >= 0) {
                if (i == 0 || i == 1) return jv_int(R->c.a, j == 0 ? 1 : i);
                if (i == -1) return jv_int(R->c.a, j % 2 ? -1 : 1);
                r = 1; /* |i| >= 2: overflows within 63 steps */
                for (long long k = 0; k < j; k++)
                    if (__builtin_mul_overflow(r, i, &r)) return int_overflow(R, line);
                return jv_int(R->c.a, r);
            }
            return jv_float(R->c.a, pow(x, y));
        default: break;
        }
    }
    if (op == JOP_ADD && a->t == b->t && (a->t == JV_STR || a->t == JV_LIST)) return concat_seq(R, a, b);
    if (op == JOP_MUL && (a->t == JV_STR || a->t == JV_LIST) && (b->t == JV_INT || b->t == JV_BOOL)) return repeat(R, a, b->i, line);
    if (op == JOP_MUL && (b->t == JV_STR || b->t == JV_LIST) && (a->t == JV_INT || a->t == JV_BOOL)) return repeat(R, b, a->i, line);
    char what[96];
    snprintf(what, sizeof what, "unsupported operand types for %s: '%s'", op_sym(op), jv_type_name(a));
    return err_at(R, line, "%s and '%s'", what, jv_type_name(b));
}

static int compare(renderer *R, jop op, jval *a, jval *b, int line) {
    switch (op) {
    case JOP_EQ: return jv_equal(a, b);
    case JOP_NE: return !jv_equal(a, b);
    case JOP_IN:
    case JOP_NOTIN: {
        int r;
        if (b->t == JV_UNDEF) {
            undefined_error(R, b, line);
            return -1;
        }
        if (b->t == JV_STR) {
            if (a->t != JV_STR) {
                err_at(R, line, "'in <string>' requires string as left operand, not %s%s", jv_type_name(a), "");
                return -1;
            }
            r = 0;
            if (a->n == 0) r = 1;
            else
                for (size_t i = 0; i + a->n <= b->n && !r; i++) r = !memcmp(b->s + i, a->s, a->n);
        } else if (b->t == JV_LIST) {
            r = 0;
            for (size_t i = 0; i < b->len && !r; i++) r = jv_equal(a, b->items[i]);
        } else if (b->t == JV_DICT || b->t == JV_NS) {
            r = jv_dict_getv(b, a) != NULL;
        } else {
            err_at(R, line, "argument of type '%s' is not iterable%s", jv_type_name(b), "");
            return -1;
        }
        return op == JOP_IN ? r : !r;
    }
    default: break;
    }
    int c;
    if (is_numeric(a) && is_numeric(b)) {
        double x = num(a), y = num(b);
        c = (x > y) - (x < y);
    } else if (a->t == JV_STR && b->t == JV_STR) {
        size_t n = a->n < b->n ? a->n : b->n;
        c = memcmp(a->s, b->s, n);
        if (!c) c = (a->n > b->n) - (a->n < b->n);
    } else {
        if (a->t == JV_UNDEF || b->t == JV_UNDEF) undefined_error(R, a->t == JV_UNDEF ? a : b, line);
        else {
            char what[96];
            snprintf(what, sizeof what, "'%s' not supported between instances of '%s'", op_sym(op), jv_type_name(a));
            err_at(R, line, "%s and '%s'", what, jv_type_name(b));
        }
        return -1;
    }
    switch (op) {
    case JOP_LT: return c < 0;
    case JOP_LE: return c <= 0;
    case JOP_GT: return c > 0;
    default: return c >= 0;
    }
}

/* Evaluates arguments of a call / filter / test node (first_extra prepended). */
static int eval_args(renderer *R, scope *s, const jnode *x, jval *first, jval ***args, size_t *n, jval ***kwv) {
    size_t base = first ? 1 : 0;
    *n = base + x->n_items;
    *args = ja_alloc(R->c.a, (*n + 1) * sizeof **args);
    *kwv = ja_alloc(R->c.a, (x->n_kw + 1) * sizeof **kwv);
    if (!*args || !*kwv) return oom(R), -1;
    if (first) (*args)[0] = first;
    for (size_t i = 0; i < x->n_items; i++)
        if (!((*args)[base + i] = eval(R, s, x->items[i]))) return -1;
    for (size_t i = 0; i < x->n_kw; i++)
        if (!((*kwv)[i] = eval(R, s, x->kw_vals[i]))) return -1;
    return 0;
}

static jval *eval(renderer *R, scope *s, const jnode *x) {
    R->c.line = x->line;
    jarena *A = R->c.a;
    switch (x->kind) {
    case JN_CONST: return x->value;
    case JN_NAME: return lookup(R, s, x->name);
    case JN_GETATTR: {
        jval *o = eval(R, s, x->a);
        return o ? get_attr(R, o, x->name, x->line) : NULL;
    }
    case JN_GETITEM: {
        jval *o = eval(R, s, x->a), *k = o ? eval(R, s, x->b) : NULL;
        return k ? get_item(R, o, k, x->line) : NULL;
    }
    case JN_SLICE: {
        jval *o = eval(R, s, x->a);
        if (!o) return NULL;
        jval *p[3] = {0};
        const jnode *pn[3] = {x->b, x->c, x->d};
        for (int i = 0; i < 3; i++)
            if (pn[i] && !(p[i] = eval(R, s, pn[i]))) return NULL;
        return slice(R, o, p[0], p[1], p[2], x->line);
    }
    case JN_CALL: {
        jval **args, **kwv;
        size_t n;
        if (x->a->kind == JN_GETATTR) { /* a method: obj.name(...) */
            jval *o = eval(R, s, x->a->a);
            if (!o) return NULL;
            if (o->t == JV_UNDEF) return undefined_error(R, o, x->line);
            jval *field = (o->t == JV_DICT || o->t == JV_NS) ? jv_dict_get(o, x->a->name, strlen(x->a->name)) : NULL;
            if (field && field->t == JV_FUNC) {
                if (eval_args(R, s, x, NULL, &args, &n, &kwv)) return NULL;
                R->c.line = x->line;
                return jinja_call_func(&R->c, field, args, n, x->kw_names, kwv, x->n_kw);
            }
            if (eval_args(R, s, x, NULL, &args, &n, &kwv)) return NULL;
            R->c.line = x->line;
            return jinja_method(&R->c, o, x->a->name, args, n, x->kw_names, kwv, x->n_kw);
        }
        jval *f = eval(R, s, x->a);
        if (!f) return NULL;
        if (f->t == JV_UNDEF) return undefined_error(R, f, x->line);
        if (f->t == JV_MACRO) return call_macro(R, s, f, x);
        if (f->t != JV_FUNC) return err_at(R, x->line, "'%s' object is not callable%s", jv_type_name(f), "");
        if (eval_args(R, s, x, NULL, &args, &n, &kwv)) return NULL;
        R->c.line = x->line;
        return jinja_call_func(&R->c, f, args, n, x->kw_names, kwv, x->n_kw);
    }
    case JN_FILTER: {
        jval *v = eval(R, s, x->a), **args, **kwv;
        size_t n;
        if (!v || eval_args(R, s, x, v, &args, &n, &kwv)) return NULL;
        R->c.line = x->line;
        return jinja_filter(&R->c, x->name, args, n, x->kw_names, kwv, x->n_kw);
    }
    case JN_TEST: {
        jval *v = eval(R, s, x->a), **args, **kwv;
        size_t n;
        if (!v || eval_args(R, s, x, NULL, &args, &n, &kwv)) return NULL;
        R->c.line = x->line;
        int r = jinja_test(&R->c, x->name, v, args, n);
        if (r < 0) return NULL;
        return jv_bool(A, x->neg ? !r : r);
    }
    case JN_BINOP: {
        jval *a = eval(R, s, x->a), *b = a ? eval(R, s, x->b) : NULL;
        return b ? binop(R, x->op, a, b, x->line) : NULL;
    }
    case JN_NEG:
    case JN_POS: {
        jval *a = eval(R, s, x->a);
        if (!a) return NULL;
        if (!is_numeric(a)) {
            if (a->t == JV_UNDEF) return undefined_error(R, a, x->line);
            return err_at(R, x->line, "bad operand type for unary %s: '%s'", x->kind == JN_NEG ? "-" : "+", jv_type_name(a));
        }
        if (x->kind == JN_POS) return a->t == JV_BOOL ? jv_int(A, a->i) : a;
        if (a->t == JV_FLOAT) return jv_float(A, -a->f);
        long long r;
        if (__builtin_sub_overflow(0LL, a->i, &r)) return int_overflow(R, x->line);
        return jv_int(A, r);
    }
    case JN_NOT: {
        jval *a = eval(R, s, x->a);
        return a ? jv_bool(A, !jv_truthy(a)) : NULL;
    }
    case JN_AND:
    case JN_OR: {
        jval *a = eval(R, s, x->a);
        if (!a) return NULL;
        int t = jv_truthy(a);
        if (x->kind == JN_AND ? !t : t) return a;
        return eval(R, s, x->b);
    }
    case JN_COMPARE: {
        jval *l = eval(R, s, x->items[0]);
        if (!l) return NULL;
        for (size_t i = 1; i < x->n_items; i++) {
            jval *r = eval(R, s, x->items[i]);
            if (!r) return NULL;
            int c = compare(R, x->ops[i - 1], l, r, x->line);
            if (c < 0) return NULL;
            if (!c) return jv_bool(A, 0);
            l = r;
        }
        return jv_bool(A, 1);
    }
    case JN_COND: {
        jval *c = eval(R, s, x->a);
        if (!c) return NULL;
        if (jv_truthy(c)) return eval(R, s, x->b);
        return x->c ? eval(R, s, x->c) : jv_undef(A, NULL);
    }
    case JN_LIST:
    case JN_TUPLE: {
        jval *l = jv_new(A, JV_LIST);
        if (!l) return oom(R);
        l->tuple = x->kind == JN_TUPLE;
        for (size_t i = 0; i < x->n_items; i++) {
            jval *v = eval(R, s, x->items[i]);
            if (!v) return NULL;
            if (jv_push(A, l, v)) return oom(R);
        }
        return l;
    }
    case JN_DICT: {
        jval *d = jv_new(A, JV_DICT);
        if (!d) return oom(R);
        for (size_t i = 0; i < x->n_items; i++) {
            jval *k = eval(R, s, x->items[i]), *v = k ? eval(R, s, x->kw_vals[i]) : NULL;
            if (!v) return NULL;
            if (jv_dict_put(A, d, k, v)) return oom(R);
        }
        return d;
    }
    default: return err_at(R, x->line, "%s%s", "internal error: a statement used as an expression", "");
    }
}

/* ------------------------------------------------------------ statements */

static int exec_body(renderer *R, scope *s, const jnode *body);

/* The items a for loop walks: lists, strings (code points), dict keys. */
static jval *iterable(renderer *R, jval *v, int line) {
    if (v->t == JV_LIST) return v;
    jval *l = jv_new(R->c.a, JV_LIST);
    if (!l) return oom(R);
    if (v->t == JV_UNDEF) return l; /* iterating an undefined value gives nothing */
    if (v->t == JV_DICT || v->t == JV_NS) {
        for (size_t i = 0; i < v->len; i++)
            if (jv_push(R->c.a, l, v->items[i])) return oom(R);
        return l;
    }
    if (v->t == JV_STR) {
        for (size_t i = 0; i < v->n;) {
            size_t e = utf8_next(v->s, v->n, i);
            if (jv_push(R->c.a, l, jv_str(R->c.a, v->s + i, e - i))) return oom(R);
            i = e;
        }
        return l;
    }
    return err_at(R, line, "'%s' object is not iterable%s", jv_type_name(v), "");
}

static int bind_targets(renderer *R, scope *s, const jnode *x, jval *item) {
    if (x->n_items == 1) return assign(R, s, x->items[0]->name, item) ? (oom(R), -1) : 0;
    jval *seq = item->t == JV_LIST ? item : NULL;
    if (!seq || seq->len != x->n_items) {
        char want[32];
        snprintf(want, sizeof want, "%zu", x->n_items);
        err_at(R, x->line, "cannot unpack %s into %s names", seq ? "a sequence of another length" : jv_type_name(item), want);
        return -1;
    }
    for (size_t i = 0; i < x->n_items; i++)
        if (assign(R, s, x->items[i]->name, seq->items[i])) return oom(R), -1;
    return 0;
}

static jval *loop_obj(renderer *R, size_t i, size_t n, jval *items) {
    jval *lp = jv_new(R->c.a, JV_LOOP);
    if (!lp) return NULL;
    lp->i = (long long)i;
    lp->len = n;
    lp->items = items->items;
    return lp;
}

static int exec_for(renderer *R, scope *s, const jnode *x) {
    jval *it = eval(R, s, x->a);
    if (!it || !(it = iterable(R, it, x->line))) return R_ERR;
    jval *items = it;
    if (x->d) { /* {% for a in b if cond %}: filter first, loop over the rest */
        items = jv_new(R->c.a, JV_LIST);
        if (!items) return oom(R), R_ERR;
        for (size_t i = 0; i < it->len; i++) {
            scope fs = {s, jv_new(R->c.a, JV_DICT)};
            if (!fs.vars || bind_targets(R, &fs, x, it->items[i])) return R_ERR;
            jval *c = eval(R, &fs, x->d);
            if (!c) return R_ERR;
            if (jv_truthy(c) && jv_push(R->c.a, items, it->items[i])) return oom(R), R_ERR;
        }
    }
    if (items->len == 0) return x->c ? exec_body(R, s, x->c) : R_OK;
    for (size_t i = 0; i < items->len; i++) {
        if (++R->steps > MAX_STEPS) {
            err_at(R, x->line, "%s%s", "the template ran more than a million loop iterations", "");
            return R_ERR;
        }
        scope is = {s, jv_new(R->c.a, JV_DICT)};
        jval *lp = loop_obj(R, i, items->len, items);
        if (!is.vars || !lp || assign(R, &is, "loop", lp)) return oom(R), R_ERR;
        if (bind_targets(R, &is, x, items->items[i])) return R_ERR;
        int r = exec_body(R, &is, x->b);
        if (r == R_ERR) return R_ERR;
        if (r == R_BREAK) break;
    }
    return R_OK;
}

static int exec_stmt(renderer *R, scope *s, const jnode *x) {
    R->c.line = x->line;
    switch (x->kind) {
    case JN_DATA: jsb_put(&R->out, x->name, x->n_items); return R_OK;
    case JN_OUTPUT: {
        jval *v = eval(R, s, x->a);
        if (!v) return R_ERR;
        jv_to_str(&R->out, v);
        return R_OK;
    }
    case JN_IF: {
        jval *c = eval(R, s, x->a);
        if (!c) return R_ERR;
        if (jv_truthy(c)) return exec_body(R, s, x->b);
        return x->c ? exec_body(R, s, x->c) : R_OK;
    }
    case JN_FOR: {
        if (++R->depth > 64) {
            err_at(R, x->line, "%s%s", "for loops nested too deeply", "");
            return R_ERR;
        }
        int r = exec_for(R, s, x);
        R->depth--;
        return r;
    }
    case JN_SET: {
        jval *v = eval(R, s, x->a);
        if (!v) return R_ERR;
        return bind_targets(R, s, x, v) ? R_ERR : R_OK;
    }
    case JN_SET_ATTR: {
        jval *ns = lookup(R, s, x->name);
        if (ns->t != JV_NS) {
            err_at(R, x->line, "cannot assign attribute on non-namespace object '%s'%s", x->name, "");
            return R_ERR;
        }
        if (x->name2[0] == '_') {
            err_at(R, x->line, "chat templates cannot store underscore-prefixed attributes on a namespace ('%s')%s",
                   x->name2, "");
            return R_ERR;
        }
        jval *v = eval(R, s, x->a);
        if (!v) return R_ERR;
        if (dms_jinja_dict_set(R->c.env, ns, x->name2, v)) return oom(R), R_ERR;
        return R_OK;
    }
    case JN_SET_BLOCK: {
        jsb saved = R->out;
        memset(&R->out, 0, sizeof R->out);
        int r = exec_body(R, s, x->b);
        size_t len;
        char *t = jsb_to_arena(&R->out, R->c.a, &len);
        R->out = saved;
        if (r == R_ERR) return R_ERR;
        if (!t || assign(R, s, x->name, jv_str_nocopy(R->c.a, t, len))) return oom(R), R_ERR;
        return r;
    }
    case JN_MACRO: {
        jval *m = jv_new(R->c.a, JV_MACRO);
        if (!m) return oom(R), R_ERR;
        m->node = x;
        return assign(R, s, x->name, m) ? (oom(R), R_ERR) : R_OK;
    }
    case JN_BREAK: return R_BREAK;
    case JN_CONTINUE: return R_CONTINUE;
    case JN_BODY: return exec_body(R, s, x);
    default: err_at(R, x->line, "%s%s", "internal error: an expression used as a statement", ""); return R_ERR;
    }
}

/* A macro call: arguments bound by position, then by name, then defaults
 * (evaluated now, in the macro's scope); the body's output is the value. */
static jval *call_macro(renderer *R, scope *s, const jval *m, const jnode *call) {
    const jnode *mac = m->node;
    jval **args, **kwv;
    size_t n;
    if (eval_args(R, s, call, NULL, &args, &n, &kwv)) return NULL;
    if (n > mac->n_items)
        return err_at(R, call->line, "macro '%s' takes at most %s arguments", mac->name,
                      mac->n_items == 0 ? "no" : mac->n_items == 1 ? "1" : "more than that");
    if (++R->depth > 64) return err_at(R, call->line, "macro '%s' called too deeply%s", mac->name, "");
    scope ms = {R->top, jv_new(R->c.a, JV_DICT)};
    if (!ms.vars) return oom(R);
    for (size_t k = 0; k < call->n_kw; k++) {
        size_t p = 0;
        while (p < mac->n_items && strcmp(mac->items[p]->name, call->kw_names[k])) p++;
        if (p == mac->n_items) return err_at(R, call->line, "macro '%s' has no argument '%s'", mac->name, call->kw_names[k]);
        if (p < n) return err_at(R, call->line, "macro '%s' got argument '%s' twice", mac->name, call->kw_names[k]);
        if (assign(R, &ms, mac->items[p]->name, kwv[k])) return oom(R);
    }
    for (size_t p = 0; p < mac->n_items; p++) {
        jval *v = p < n ? args[p] : jv_dict_get(ms.vars, mac->items[p]->name, strlen(mac->items[p]->name));
        if (!v) v = mac->kw_vals[p] ? eval(R, &ms, mac->kw_vals[p]) : jv_undef(R->c.a, mac->items[p]->name);
        if (!v || assign(R, &ms, mac->items[p]->name, v)) return v ? oom(R) : NULL;
    }
    jsb saved = R->out;
    memset(&R->out, 0, sizeof R->out);
    int r = exec_body(R, &ms, mac->b);
    size_t len;
    char *t = jsb_to_arena(&R->out, R->c.a, &len);
    R->out = saved;
    R->depth--;
    if (r == R_ERR) return NULL;
    return t ? jv_str_nocopy(R->c.a, t, len) : oom(R);
}

static int exec_body(renderer *R, scope *s, const jnode *body) {
    for (size_t i = 0; i < body->n_items; i++) {
        int r = exec_stmt(R, s, body->items[i]);
        if (r != R_OK) return r;
        if (R->out.oom) {
            oom(R);
            return R_ERR;
        }
        if (R->out.n > MAX_TEXT) {
            err_at(R, body->items[i]->line, "%s%s", "the output grew past 256 MiB", "");
            return R_ERR;
        }
    }
    return R_OK;
}

char *dms_jinja_render(const dms_jinja *t, dms_jinja_env *e, size_t *len, dms_err *err) {
    renderer R = {.c = {.env = e, .a = &e->arena, .err = err}};
    scope top = {NULL, jv_new(&e->arena, JV_DICT)};
    R.top = &top;
    if (!top.vars) {
        dms_errf(err, "out of memory");
        return NULL;
    }
    int r = exec_body(&R, &top, t->root);
    if (r == R_OK && R.out.oom) r = (oom(&R), R_ERR);
    if (r == R_BREAK || r == R_CONTINUE) r = R_OK; /* outside a loop: Jinja stops there too */
    if (r != R_OK) {
        free(R.out.s);
        return NULL;
    }
    if (!R.out.s) jsb_put(&R.out, "", 0);
    if (R.out.oom) {
        free(R.out.s);
        dms_errf(err, "out of memory");
        return NULL;
    }
    if (len) *len = R.out.n;
    return R.out.s;
}

/* --------------------------------------------------------- public values */

dms_jinja_env *dms_jinja_env_new(void) {
    dms_jinja_env *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->vars = jv_new(&e->arena, JV_DICT);
    if (!e->vars) {
        dms_jinja_env_free(e);
        return NULL;
    }
    return e;
}

void dms_jinja_env_free(dms_jinja_env *e) {
    if (!e) return;
    ja_release(&e->arena);
    free(e);
}

dms_jval *dms_jinja_none(dms_jinja_env *e) { return jv_new(&e->arena, JV_NONE); }
dms_jval *dms_jinja_bool(dms_jinja_env *e, int b) { return jv_bool(&e->arena, b); }
dms_jval *dms_jinja_str(dms_jinja_env *e, const char *s, size_t len) { return jv_str(&e->arena, s, len); }
dms_jval *dms_jinja_list(dms_jinja_env *e) { return jv_new(&e->arena, JV_LIST); }
dms_jval *dms_jinja_dict(dms_jinja_env *e) { return jv_new(&e->arena, JV_DICT); }
int dms_jinja_list_add(dms_jinja_env *e, dms_jval *list, dms_jval *item) { return jv_push(&e->arena, list, item); }

int dms_jinja_dict_set(dms_jinja_env *e, dms_jval *dict, const char *key, dms_jval *v) {
    jval *k = jv_str(&e->arena, key, strlen(key));
    return k ? jv_dict_put(&e->arena, dict, k, v) : -1;
}

int dms_jinja_set(dms_jinja_env *e, const char *name, dms_jval *v) { return dms_jinja_dict_set(e, e->vars, name, v); }

void dms_jinja_set_time(dms_jinja_env *e, time_t now) {
    e->now = now;
    e->have_now = 1;
}
