/* jinja_parse.c - builds the AST of a template from jinja_lex.c's tokens,
 * with Jinja's grammar and precedence (conditional < or < and < not <
 * comparisons / in < + - < ~ < * / // % < ** < unary, with filters `|` and
 * tests `is` binding tightest). Statements: if/elif/else, for (tuple
 * targets, `if` filter, else), set (names, tuples, namespace attributes,
 * blocks), break/continue (transformers enables loopcontrols) and
 * generation (transformers' AssistantTracker; renders its body). Anything
 * else - another statement, an unknown filter or test - is an error that
 * names it and its line. */
#include "model/jinja_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const jtok *t;
    size_t n, i;
    jarena *a;
    dms_err *err;
    int failed;
    int depth; /* nesting of expressions and blocks: bounded, the parser recurses */
} parser;

#define MAX_DEPTH 200

static const jtok *cur(parser *P) { return &P->t[P->i]; }

static int fail(parser *P, const char *fmt, const char *what, int line) {
    if (!P->failed) {
        char buf[256];
        snprintf(buf, sizeof buf, fmt, what);
        dms_errf(P->err, "%s at line %d", buf, line);
    }
    P->failed = 1;
    return -1;
}

static const char *tok_desc(const jtok *t, char *buf, size_t n) {
    switch (t->t) {
    case JT_NAME:
    case JT_OP: snprintf(buf, n, "'%.*s'", (int)(t->n < 40 ? t->n : 40), t->s); break;
    case JT_STRING: snprintf(buf, n, "a string"); break;
    case JT_INT:
    case JT_FLOAT: snprintf(buf, n, "a number"); break;
    case JT_VAR_END: snprintf(buf, n, "'}}'"); break;
    case JT_BLOCK_END: snprintf(buf, n, "'%%}'"); break;
    case JT_EOF: snprintf(buf, n, "the end of the template"); break;
    default: snprintf(buf, n, "text");
    }
    return buf;
}

static int unexpected(parser *P) {
    char buf[64];
    return fail(P, "syntax error: unexpected %s", tok_desc(cur(P), buf, sizeof buf), cur(P)->line);
}

static int is_op(parser *P, const char *op) {
    const jtok *t = cur(P);
    return t->t == JT_OP && t->n == strlen(op) && !memcmp(t->s, op, t->n);
}

static int is_name(parser *P, const char *name) {
    const jtok *t = cur(P);
    return t->t == JT_NAME && t->n == strlen(name) && !memcmp(t->s, name, t->n);
}

static int accept_op(parser *P, const char *op) {
    if (!is_op(P, op)) return 0;
    P->i++;
    return 1;
}

static int expect_op(parser *P, const char *op) {
    if (accept_op(P, op)) return 0;
    char buf[64];
    char what[96];
    snprintf(what, sizeof what, "'%s' expected, got %s", op, tok_desc(cur(P), buf, sizeof buf));
    return fail(P, "syntax error: %s", what, cur(P)->line);
}

static jnode *node(parser *P, jnode_kind k, int line) {
    jnode *x = ja_alloc(P->a, sizeof *x);
    if (!x) {
        fail(P, "%s", "out of memory", line);
        return NULL;
    }
    x->kind = k;
    x->line = line;
    return x;
}

static char *tok_name(parser *P, const jtok *t) {
    char *s = ja_strndup(P->a, t->s, t->n);
    if (!s) fail(P, "%s", "out of memory", t->line);
    return s;
}

/* growable node list in the arena */
typedef struct {
    jnode **v;
    size_t n, cap;
} nlist;

static int nl_push(parser *P, nlist *l, jnode *x) {
    if (!x) return -1;
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 4;
        jnode **p = ja_alloc(P->a, nc * sizeof *p);
        if (!p) return fail(P, "%s", "out of memory", x->line);
        if (l->n) memcpy(p, l->v, l->n * sizeof *p);
        l->v = p;
        l->cap = nc;
    }
    l->v[l->n++] = x;
    return 0;
}

static jnode *parse_expression(parser *P, int with_cond);
static jnode *parse_or(parser *P);
static jnode *parse_unary(parser *P, int with_filter);
static jnode *parse_primary(parser *P);

/* (args, kw=args) after '(' was consumed */
static int parse_args(parser *P, jnode *call) {
    nlist args = {0}, kwv = {0};
    const char **kwn = NULL;
    size_t nkw = 0, capkw = 0;
    while (!is_op(P, ")")) {
        if (args.n + nkw > 0 && expect_op(P, ",")) return -1;
        if (is_op(P, ")")) break;
        if (cur(P)->t == JT_NAME && P->t[P->i + 1].t == JT_OP && P->t[P->i + 1].n == 1 && P->t[P->i + 1].s[0] == '=') {
            if (nkw == capkw) {
                size_t nc = capkw ? 2 * capkw : 4;
                const char **p = ja_alloc(P->a, nc * sizeof *p);
                if (!p) return fail(P, "%s", "out of memory", cur(P)->line);
                if (nkw) memcpy(p, kwn, nkw * sizeof *p);
                kwn = p;
                capkw = nc;
            }
            kwn[nkw++] = tok_name(P, cur(P));
            P->i += 2;
            if (nl_push(P, &kwv, parse_expression(P, 1))) return -1;
        } else {
            if (nkw) return fail(P, "syntax error: %s", "positional argument after keyword argument", cur(P)->line);
            if (nl_push(P, &args, parse_expression(P, 1))) return -1;
        }
        if (P->failed) return -1;
    }
    P->i++; /* ')' */
    call->items = args.v;
    call->n_items = args.n;
    call->kw_names = kwn;
    call->kw_vals = kwv.v;
    call->n_kw = nkw;
    return 0;
}

static jnode *parse_subscript(parser *P, jnode *obj, int line) {
    /* after '[' : expr | [a]:[b][:[c]] */
    jnode *parts[3] = {0};
    int k = 0, slice = 0;
    for (;;) {
        if (!is_op(P, ":") && !is_op(P, "]")) {
            parts[k] = parse_expression(P, 1);
            if (!parts[k]) return NULL;
        }
        if (accept_op(P, ":")) {
            slice = 1;
            if (++k > 2) {
                unexpected(P);
                return NULL;
            }
            continue;
        }
        break;
    }
    if (expect_op(P, "]")) return NULL;
    jnode *x = node(P, slice ? JN_SLICE : JN_GETITEM, line);
    if (!x) return NULL;
    x->a = obj;
    x->b = parts[0];
    if (slice) {
        x->c = parts[1];
        x->d = parts[2];
    } else if (!parts[0]) {
        unexpected(P);
        return NULL;
    }
    return x;
}

static jnode *parse_postfix(parser *P, jnode *x) {
    while (x && !P->failed) {
        int line = cur(P)->line;
        if (accept_op(P, ".")) {
            const jtok *t = cur(P);
            if (t->t != JT_NAME && t->t != JT_INT) {
                unexpected(P);
                return NULL;
            }
            jnode *g;
            if (t->t == JT_INT) { /* foo.0 == foo[0] */
                g = node(P, JN_GETITEM, line);
                jnode *k = node(P, JN_CONST, line);
                if (!g || !k || !(k->value = jv_int(P->a, t->i))) return NULL;
                g->b = k;
            } else {
                g = node(P, JN_GETATTR, line);
                if (!g || !(g->name = tok_name(P, t))) return NULL;
            }
            g->a = x;
            P->i++;
            x = g;
        } else if (accept_op(P, "[")) {
            x = parse_subscript(P, x, line);
        } else if (accept_op(P, "(")) {
            jnode *c = node(P, JN_CALL, line);
            if (!c) return NULL;
            c->a = x;
            if (parse_args(P, c)) return NULL;
            x = c;
        } else {
            break;
        }
    }
    return x;
}

static char *parse_dotted_name(parser *P) {
    const jtok *t = cur(P);
    if (t->t != JT_NAME) {
        unexpected(P);
        return NULL;
    }
    P->i++;
    jsb b = {0};
    jsb_put(&b, t->s, t->n);
    while (is_op(P, ".") && P->t[P->i + 1].t == JT_NAME) {
        jsb_putc(&b, '.');
        jsb_put(&b, P->t[P->i + 1].s, P->t[P->i + 1].n);
        P->i += 2;
    }
    char *s = jsb_to_arena(&b, P->a, NULL);
    if (!s) fail(P, "%s", "out of memory", t->line);
    return s;
}

static jnode *parse_filter_expr(parser *P, jnode *x) {
    while (x && !P->failed) {
        int line = cur(P)->line;
        if (accept_op(P, "|")) {
            char *name = parse_dotted_name(P);
            if (!name) return NULL;
            if (!jinja_filter_known(name)) {
                fail(P, "unsupported filter '%s'", name, line);
                return NULL;
            }
            jnode *f = node(P, JN_FILTER, line);
            if (!f) return NULL;
            f->name = name;
            f->a = x;
            if (accept_op(P, "(") && parse_args(P, f)) return NULL;
            x = f;
        } else if (is_name(P, "is")) {
            P->i++;
            int neg = 0;
            if (is_name(P, "not")) {
                neg = 1;
                P->i++;
            }
            char *name = parse_dotted_name(P);
            if (!name) return NULL;
            if (!jinja_test_known(name)) {
                fail(P, "unsupported test '%s'", name, line);
                return NULL;
            }
            jnode *t = node(P, JN_TEST, line);
            if (!t) return NULL;
            t->name = name;
            t->neg = neg;
            t->a = x;
            const jtok *c = cur(P);
            if (accept_op(P, "(")) {
                if (parse_args(P, t)) return NULL;
            } else if ((c->t == JT_NAME || c->t == JT_STRING || c->t == JT_INT || c->t == JT_FLOAT ||
                        is_op(P, "[") || is_op(P, "{")) &&
                       !is_name(P, "else") && !is_name(P, "or") && !is_name(P, "and")) {
                /* `x is divisibleby 3`: one argument without parentheses */
                jnode *arg = parse_primary(P);
                arg = parse_postfix(P, arg);
                if (!arg) return NULL;
                t->items = ja_alloc(P->a, sizeof *t->items);
                if (!t->items) return NULL;
                t->items[0] = arg;
                t->n_items = 1;
            }
            x = t;
        } else if (accept_op(P, "(")) {
            jnode *c = node(P, JN_CALL, line);
            if (!c) return NULL;
            c->a = x;
            if (parse_args(P, c)) return NULL;
            x = c;
        } else {
            break;
        }
    }
    return x;
}

static jnode *const_node(parser *P, jval *v, int line) {
    jnode *x = node(P, JN_CONST, line);
    if (!x) return NULL;
    if (!v) {
        fail(P, "%s", "out of memory", line);
        return NULL;
    }
    x->value = v;
    return x;
}

static jnode *parse_seq(parser *P, jnode_kind k, const char *close, int line) {
    nlist items = {0};
    while (!is_op(P, close)) {
        if (items.n && expect_op(P, ",")) return NULL;
        if (is_op(P, close)) break;
        if (nl_push(P, &items, parse_expression(P, 1))) return NULL;
    }
    P->i++;
    jnode *x = node(P, k, line);
    if (!x) return NULL;
    x->items = items.v;
    x->n_items = items.n;
    return x;
}

static jnode *parse_primary(parser *P) {
    const jtok *t = cur(P);
    int line = t->line;
    switch (t->t) {
    case JT_NAME: {
        P->i++;
#define NAMEIS(lit) (t->n == sizeof lit - 1 && !memcmp(t->s, lit, t->n))
        if (NAMEIS("true") || NAMEIS("True")) return const_node(P, jv_bool(P->a, 1), line);
        if (NAMEIS("false") || NAMEIS("False")) return const_node(P, jv_bool(P->a, 0), line);
        if (NAMEIS("none") || NAMEIS("None")) return const_node(P, jv_new(P->a, JV_NONE), line);
#undef NAMEIS
        jnode *x = node(P, JN_NAME, line);
        if (x && !(x->name = tok_name(P, t))) return NULL;
        return x;
    }
    case JT_STRING: {
        /* adjacent literals concatenate */
        jsb b = {0};
        while (cur(P)->t == JT_STRING) {
            jsb_put(&b, cur(P)->s, cur(P)->n);
            P->i++;
        }
        size_t len;
        char *s = jsb_to_arena(&b, P->a, &len);
        return const_node(P, s ? jv_str_nocopy(P->a, s, len) : NULL, line);
    }
    case JT_INT: P->i++; return const_node(P, jv_int(P->a, t->i), line);
    case JT_FLOAT: P->i++; return const_node(P, jv_float(P->a, t->f), line);
    case JT_OP:
        if (accept_op(P, "(")) {
            if (accept_op(P, ")")) {
                jnode *x = node(P, JN_TUPLE, line);
                return x;
            }
            jnode *e = parse_expression(P, 1);
            if (!e) return NULL;
            if (is_op(P, ",")) { /* a tuple */
                nlist items = {0};
                if (nl_push(P, &items, e)) return NULL;
                while (accept_op(P, ",")) {
                    if (is_op(P, ")")) break;
                    if (nl_push(P, &items, parse_expression(P, 1))) return NULL;
                }
                if (expect_op(P, ")")) return NULL;
                jnode *x = node(P, JN_TUPLE, line);
                if (!x) return NULL;
                x->items = items.v;
                x->n_items = items.n;
                return x;
            }
            if (expect_op(P, ")")) return NULL;
            return e;
        }
        if (accept_op(P, "[")) return parse_seq(P, JN_LIST, "]", line);
        if (accept_op(P, "{")) {
            nlist keys = {0}, vals = {0};
            while (!is_op(P, "}")) {
                if (keys.n && expect_op(P, ",")) return NULL;
                if (is_op(P, "}")) break;
                if (nl_push(P, &keys, parse_expression(P, 1))) return NULL;
                if (expect_op(P, ":")) return NULL;
                if (nl_push(P, &vals, parse_expression(P, 1))) return NULL;
            }
            P->i++;
            jnode *x = node(P, JN_DICT, line);
            if (!x) return NULL;
            x->items = keys.v;
            x->kw_vals = vals.v;
            x->n_items = keys.n;
            return x;
        }
        unexpected(P);
        return NULL;
    default: unexpected(P); return NULL;
    }
}

static jnode *parse_unary(parser *P, int with_filter) {
    int line = cur(P)->line;
    jnode *x;
    if (accept_op(P, "-") || accept_op(P, "+")) {
        int neg = P->t[P->i - 1].s[0] == '-';
        if (++P->depth > MAX_DEPTH) {
            fail(P, "%s", "expression nested too deeply", line);
            return NULL;
        }
        jnode *o = parse_unary(P, 0);
        P->depth--;
        if (!o) return NULL;
        x = node(P, neg ? JN_NEG : JN_POS, line);
        if (!x) return NULL;
        x->a = o;
    } else {
        x = parse_primary(P);
    }
    x = parse_postfix(P, x);
    if (with_filter) x = parse_filter_expr(P, x);
    return x;
}

static jnode *binop(parser *P, jop op, jnode *a, jnode *b, int line) {
    if (!a || !b) return NULL;
    jnode *x = node(P, JN_BINOP, line);
    if (!x) return NULL;
    x->op = op;
    x->a = a;
    x->b = b;
    return x;
}

static jnode *parse_pow(parser *P) {
    jnode *x = parse_unary(P, 1);
    while (x && is_op(P, "**")) {
        int line = cur(P)->line;
        P->i++;
        x = binop(P, JOP_POW, x, parse_unary(P, 1), line);
    }
    return x;
}

static jnode *parse_math2(parser *P) {
    jnode *x = parse_pow(P);
    while (x) {
        int line = cur(P)->line;
        jop op;
        if (is_op(P, "*")) op = JOP_MUL;
        else if (is_op(P, "/")) op = JOP_DIV;
        else if (is_op(P, "//")) op = JOP_FLOORDIV;
        else if (is_op(P, "%")) op = JOP_MOD;
        else break;
        P->i++;
        x = binop(P, op, x, parse_pow(P), line);
    }
    return x;
}

static jnode *parse_concat(parser *P) {
    jnode *x = parse_math2(P);
    while (x && is_op(P, "~")) {
        int line = cur(P)->line;
        P->i++;
        x = binop(P, JOP_CONCAT, x, parse_math2(P), line);
    }
    return x;
}

static jnode *parse_math1(parser *P) {
    jnode *x = parse_concat(P);
    while (x && (is_op(P, "+") || is_op(P, "-"))) {
        int line = cur(P)->line;
        jop op = is_op(P, "+") ? JOP_ADD : JOP_SUB;
        P->i++;
        x = binop(P, op, x, parse_concat(P), line);
    }
    return x;
}

static jnode *parse_compare(parser *P) {
    int line = cur(P)->line;
    jnode *x = parse_math1(P);
    if (!x) return NULL;
    nlist ops_nodes = {0};
    jop ops[64];
    size_t nops = 0;
    if (nl_push(P, &ops_nodes, x)) return NULL;
    for (;;) {
        jop op;
        if (is_op(P, "==")) op = JOP_EQ;
        else if (is_op(P, "!=")) op = JOP_NE;
        else if (is_op(P, "<")) op = JOP_LT;
        else if (is_op(P, "<=")) op = JOP_LE;
        else if (is_op(P, ">")) op = JOP_GT;
        else if (is_op(P, ">=")) op = JOP_GE;
        else if (is_name(P, "in")) op = JOP_IN;
        else if (is_name(P, "not") && P->t[P->i + 1].t == JT_NAME && P->t[P->i + 1].n == 2 &&
                 !memcmp(P->t[P->i + 1].s, "in", 2)) {
            op = JOP_NOTIN;
            P->i++;
        } else break;
        P->i++;
        if (nops == sizeof ops / sizeof *ops) return fail(P, "%s", "comparison chain too long", line), NULL;
        ops[nops++] = op;
        if (nl_push(P, &ops_nodes, parse_math1(P))) return NULL;
    }
    if (nops == 0) return x;
    jnode *c = node(P, JN_COMPARE, line);
    if (!c) return NULL;
    c->items = ops_nodes.v;
    c->n_items = ops_nodes.n;
    c->ops = ja_alloc(P->a, nops * sizeof *c->ops);
    if (!c->ops) return NULL;
    memcpy(c->ops, ops, nops * sizeof *ops);
    return c;
}

static jnode *parse_not(parser *P) {
    if (is_name(P, "not")) {
        int line = cur(P)->line;
        P->i++;
        if (++P->depth > MAX_DEPTH) {
            fail(P, "%s", "expression nested too deeply", line);
            return NULL;
        }
        jnode *o = parse_not(P);
        P->depth--;
        if (!o) return NULL;
        jnode *x = node(P, JN_NOT, line);
        if (x) x->a = o;
        return x;
    }
    return parse_compare(P);
}

/* x (KEYWORD x)*, left-associative, each operand parsed by sub. */
static jnode *parse_left_chain(parser *P, const char *keyword, jnode_kind kind, jnode *(*sub)(parser *)) {
    jnode *x = sub(P);
    while (x && is_name(P, keyword)) {
        int line = cur(P)->line;
        P->i++;
        jnode *b = sub(P);
        jnode *y = b ? node(P, kind, line) : NULL;
        if (!y) return NULL;
        y->a = x;
        y->b = b;
        x = y;
    }
    return x;
}

static jnode *parse_and(parser *P) { return parse_left_chain(P, "and", JN_AND, parse_not); }

static jnode *parse_or(parser *P) { return parse_left_chain(P, "or", JN_OR, parse_and); }

static jnode *parse_expression_inner(parser *P, int with_cond);

static jnode *parse_expression(parser *P, int with_cond) {
    if (++P->depth > MAX_DEPTH) {
        fail(P, "%s", "expression nested too deeply", cur(P)->line);
        return NULL;
    }
    jnode *x = parse_expression_inner(P, with_cond);
    P->depth--;
    return x;
}

static jnode *parse_expression_inner(parser *P, int with_cond) {
    jnode *x = parse_or(P);
    while (with_cond && x && is_name(P, "if")) {
        int line = cur(P)->line;
        P->i++;
        jnode *cond = parse_or(P);
        if (!cond) return NULL;
        jnode *els = NULL;
        if (is_name(P, "else")) {
            P->i++;
            els = parse_expression(P, 1);
            if (!els) return NULL;
        }
        jnode *c = node(P, JN_COND, line);
        if (!c) return NULL;
        c->a = cond;
        c->b = x;
        c->c = els;
        x = c;
    }
    return x;
}

/* expression, or `a, b` as a tuple (output and set values) */
static jnode *parse_tuple_expr(parser *P, int with_cond) {
    int line = cur(P)->line;
    jnode *x = parse_expression(P, with_cond);
    if (!x || !is_op(P, ",")) return x;
    nlist items = {0};
    if (nl_push(P, &items, x)) return NULL;
    while (accept_op(P, ",")) {
        if (cur(P)->t == JT_VAR_END || cur(P)->t == JT_BLOCK_END) break;
        if (nl_push(P, &items, parse_expression(P, with_cond))) return NULL;
    }
    jnode *t = node(P, JN_TUPLE, line);
    if (!t) return NULL;
    t->items = items.v;
    t->n_items = items.n;
    return t;
}

/* ------------------------------------------------------------ statements */

static int expect_block_end(parser *P) {
    if (cur(P)->t == JT_BLOCK_END) {
        P->i++;
        return 0;
    }
    return unexpected(P);
}

/* Parses statements until one of the end keywords (a block tag whose first
 * name is in `ends`); leaves P at that keyword (after the BLOCK_BEGIN). */
static jnode *parse_body(parser *P, const char *const *ends, int n_ends, const char *opened, int opened_line);

static int parse_targets(parser *P, nlist *targets) {
    int paren = accept_op(P, "(");
    do {
        const jtok *t = cur(P);
        if (t->t != JT_NAME) return unexpected(P);
        jnode *x = node(P, JN_NAME, t->line);
        if (!x || !(x->name = tok_name(P, t))) return -1;
        P->i++;
        if (nl_push(P, targets, x)) return -1;
    } while (accept_op(P, ","));
    if (paren && expect_op(P, ")")) return -1;
    return 0;
}

static jnode *parse_statement(parser *P) {
    const jtok *kw = cur(P);
    int line = kw->line;
    if (kw->t != JT_NAME) {
        unexpected(P);
        return NULL;
    }
    char name[32];
    snprintf(name, sizeof name, "%.*s", (int)(kw->n < 31 ? kw->n : 31), kw->s);
    P->i++;
    if (!strcmp(name, "if")) {
        jnode *x = node(P, JN_IF, line);
        if (!x || !(x->a = parse_or(P)) || expect_block_end(P)) return NULL;
        static const char *const ends[] = {"elif", "else", "endif"};
        jnode *tail = x;
        for (;;) {
            tail->b = parse_body(P, ends, 3, "if", line);
            if (!tail->b) return NULL;
            if (is_name(P, "elif")) {
                int l2 = cur(P)->line;
                P->i++;
                jnode *e = node(P, JN_IF, l2);
                if (!e || !(e->a = parse_or(P)) || expect_block_end(P)) return NULL;
                jnode *wrap = node(P, JN_BODY, l2);
                if (!wrap) return NULL;
                wrap->items = ja_alloc(P->a, sizeof *wrap->items);
                if (!wrap->items) return NULL;
                wrap->items[0] = e;
                wrap->n_items = 1;
                tail->c = wrap;
                tail = e;
                continue;
            }
            if (is_name(P, "else")) {
                P->i++;
                if (expect_block_end(P)) return NULL;
                static const char *const end_only[] = {"endif"};
                tail->c = parse_body(P, end_only, 1, "if", line);
                if (!tail->c) return NULL;
            }
            P->i++; /* endif */
            if (expect_block_end(P)) return NULL;
            return x;
        }
    }
    if (!strcmp(name, "for")) {
        jnode *x = node(P, JN_FOR, line);
        nlist targets = {0};
        if (!x || parse_targets(P, &targets)) return NULL;
        x->items = targets.v;
        x->n_items = targets.n;
        if (!is_name(P, "in")) {
            unexpected(P);
            return NULL;
        }
        P->i++;
        if (!(x->a = parse_or(P))) return NULL;
        if (is_name(P, "if")) {
            P->i++;
            if (!(x->d = parse_expression(P, 1))) return NULL;
        }
        if (is_name(P, "recursive")) {
            fail(P, "unsupported %s", "recursive for loop", cur(P)->line);
            return NULL;
        }
        if (expect_block_end(P)) return NULL;
        static const char *const ends[] = {"else", "endfor"};
        if (!(x->b = parse_body(P, ends, 2, "for", line))) return NULL;
        if (is_name(P, "else")) {
            P->i++;
            if (expect_block_end(P)) return NULL;
            static const char *const end_only[] = {"endfor"};
            if (!(x->c = parse_body(P, end_only, 1, "for", line))) return NULL;
        }
        P->i++;
        if (expect_block_end(P)) return NULL;
        return x;
    }
    if (!strcmp(name, "set")) {
        const jtok *t = cur(P);
        if (t->t != JT_NAME) {
            unexpected(P);
            return NULL;
        }
        if (P->t[P->i + 1].t == JT_OP && P->t[P->i + 1].n == 1 && P->t[P->i + 1].s[0] == '.') {
            const jtok *attr = &P->t[P->i + 2];
            if (attr->t != JT_NAME) {
                P->i += 2;
                unexpected(P);
                return NULL;
            }
            jnode *x = node(P, JN_SET_ATTR, line);
            if (!x || !(x->name = tok_name(P, t)) || !(x->name2 = tok_name(P, attr))) return NULL;
            P->i += 3;
            if (expect_op(P, "=") || !(x->a = parse_tuple_expr(P, 1)) || expect_block_end(P)) return NULL;
            return x;
        }
        nlist targets = {0};
        if (parse_targets(P, &targets)) return NULL;
        if (cur(P)->t == JT_BLOCK_END && targets.n == 1) { /* {% set x %}...{% endset %} */
            P->i++;
            jnode *x = node(P, JN_SET_BLOCK, line);
            if (!x) return NULL;
            x->name = targets.v[0]->name;
            static const char *const ends[] = {"endset"};
            if (!(x->b = parse_body(P, ends, 1, "set", line))) return NULL;
            P->i++;
            if (expect_block_end(P)) return NULL;
            return x;
        }
        if (is_op(P, "|")) {
            fail(P, "unsupported %s", "filtered {% set %} block", cur(P)->line);
            return NULL;
        }
        jnode *x = node(P, JN_SET, line);
        if (!x) return NULL;
        x->items = targets.v;
        x->n_items = targets.n;
        if (expect_op(P, "=") || !(x->a = parse_tuple_expr(P, 1)) || expect_block_end(P)) return NULL;
        return x;
    }
    if (!strcmp(name, "break") || !strcmp(name, "continue")) {
        jnode *x = node(P, name[0] == 'b' ? JN_BREAK : JN_CONTINUE, line);
        if (!x || expect_block_end(P)) return NULL;
        return x;
    }
    if (!strcmp(name, "macro")) {
        /* {% macro name(a, b=default) %}body{% endmacro %}: items = parameter
         * names, kw_vals[i] = the default of items[i] or NULL, b = body */
        const jtok *t = cur(P);
        if (t->t != JT_NAME) {
            unexpected(P);
            return NULL;
        }
        jnode *x = node(P, JN_MACRO, line);
        if (!x || !(x->name = tok_name(P, t))) return NULL;
        P->i++;
        if (expect_op(P, "(")) return NULL;
        nlist params = {0}, defaults = {0};
        while (!accept_op(P, ")")) {
            if (params.n && expect_op(P, ",")) return NULL;
            if (accept_op(P, ")")) break;
            const jtok *pn = cur(P);
            if (pn->t != JT_NAME) {
                unexpected(P);
                return NULL;
            }
            jnode *pnode = node(P, JN_NAME, pn->line);
            if (!pnode || !(pnode->name = tok_name(P, pn))) return NULL;
            P->i++;
            jnode *dflt = NULL;
            if (accept_op(P, "=") && !(dflt = parse_expression(P, 1))) return NULL;
            if (!dflt && defaults.n && defaults.v[defaults.n - 1]) {
                fail(P, "syntax error: %s", "non-default argument follows default argument", pn->line);
                return NULL;
            }
            /* nl_push refuses NULL: keep defaults in a parallel array by hand */
            if (nl_push(P, &params, pnode)) return NULL;
            if (defaults.n == defaults.cap) {
                size_t nc = defaults.cap ? 2 * defaults.cap : 4;
                jnode **p = ja_alloc(P->a, nc * sizeof *p);
                if (!p) return NULL;
                if (defaults.n) memcpy(p, defaults.v, defaults.n * sizeof *p);
                defaults.v = p;
                defaults.cap = nc;
            }
            defaults.v[defaults.n++] = dflt;
        }
        if (expect_block_end(P)) return NULL;
        static const char *const ends[] = {"endmacro"};
        if (!(x->b = parse_body(P, ends, 1, "macro", line))) return NULL;
        P->i++;
        if (expect_block_end(P)) return NULL;
        x->items = params.v;
        x->n_items = params.n;
        x->kw_vals = defaults.v;
        return x;
    }
    if (!strcmp(name, "generation")) {
        if (expect_block_end(P)) return NULL;
        static const char *const ends[] = {"endgeneration"};
        jnode *b = parse_body(P, ends, 1, "generation", line);
        if (!b) return NULL;
        P->i++;
        if (expect_block_end(P)) return NULL;
        return b;
    }
    static const char *const closers[] = {"endif", "endfor", "else", "elif", "endset", "endgeneration", "endraw",
                                          "endmacro"};
    for (size_t k = 0; k < sizeof closers / sizeof *closers; k++)
        if (!strcmp(name, closers[k])) {
            fail(P, "syntax error: unexpected '%s'", name, line);
            return NULL;
        }
    fail(P, "unsupported statement '%s'", name, line);
    return NULL;
}

static jnode *parse_body(parser *P, const char *const *ends, int n_ends, const char *opened, int opened_line) {
    nlist items = {0};
    int line = cur(P)->line;
    if (++P->depth > MAX_DEPTH) {
        fail(P, "%s", "blocks nested too deeply", line);
        return NULL;
    }
    for (;;) {
        const jtok *t = cur(P);
        if (t->t == JT_EOF) {
            if (!ends) break;
            char what[64];
            snprintf(what, sizeof what, "{%% %s %%} from line %d", opened, opened_line);
            fail(P, "unexpected end of template: unclosed %s", what, t->line);
            return NULL;
        }
        if (t->t == JT_DATA) {
            jnode *x = node(P, JN_DATA, t->line);
            if (!x) return NULL;
            x->name = t->s;
            x->n_items = t->n; /* text length */
            P->i++;
            if (nl_push(P, &items, x)) return NULL;
        } else if (t->t == JT_VAR_BEGIN) {
            P->i++;
            jnode *x = node(P, JN_OUTPUT, t->line);
            if (!x || !(x->a = parse_tuple_expr(P, 1))) return NULL;
            if (cur(P)->t != JT_VAR_END) {
                unexpected(P);
                return NULL;
            }
            P->i++;
            if (nl_push(P, &items, x)) return NULL;
        } else if (t->t == JT_BLOCK_BEGIN) {
            const jtok *kw = &P->t[P->i + 1];
            for (int k = 0; k < n_ends; k++)
                if (kw->t == JT_NAME && kw->n == strlen(ends[k]) && !memcmp(kw->s, ends[k], kw->n)) {
                    P->i++; /* leave P at the keyword */
                    goto done;
                }
            P->i++;
            if (nl_push(P, &items, parse_statement(P))) return NULL;
        } else {
            unexpected(P);
            return NULL;
        }
        if (P->failed) return NULL;
    }
done:
    P->depth--;
    jnode *b = node(P, JN_BODY, line);
    if (!b) return NULL;
    b->items = items.v;
    b->n_items = items.n;
    return b;
}

dms_jinja *dms_jinja_parse(const char *src, dms_err *err) {
    dms_jinja *t = calloc(1, sizeof *t);
    if (!t) {
        dms_errf(err, "out of memory");
        return NULL;
    }
    jtok *toks = NULL;
    size_t nt = 0;
    if (jinja_lex(src ? src : "", &t->arena, &toks, &nt, err)) {
        dms_jinja_free(t);
        return NULL;
    }
    parser P = {.t = toks, .n = nt, .a = &t->arena, .err = err};
    t->root = parse_body(&P, NULL, 0, NULL, 0);
    free(toks);
    if (!t->root || P.failed) {
        if (!P.failed) dms_errf(err, "out of memory");
        dms_jinja_free(t);
        return NULL;
    }
    return t;
}

void dms_jinja_free(dms_jinja *t) {
    if (!t) return;
    ja_release(&t->arena);
    free(t);
}
