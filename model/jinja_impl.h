/* jinja_impl.h - what the files of the Jinja engine share (model/jinja.h is
 * the public face): an arena for the AST and for render-time values, a
 * string builder, the tokens of the lexer (jinja_lex.c), the AST of the
 * parser (jinja_parse.c), the values with their Python semantics
 * (jinja_value.c), and the builtin filters, tests, methods and globals
 * (jinja_builtins.c) the evaluator (jinja_eval.c) calls. */
#ifndef DMS_JINJA_IMPL_H
#define DMS_JINJA_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/err.h"
#include "model/jinja.h"

/* ---------------------------------------------------------------- memory */
typedef struct ja_block ja_block;
typedef struct {
    ja_block *head;
    size_t total; /* bytes held: capped (JA_MAX), a runaway template gets "out of memory" */
    int oom;
} jarena;

#define JA_MAX ((size_t)128 << 20)
/* Longest string a template may build (string builders: filters such as
 * join, concatenation, the output): a template that multiplies a string
 * with each filter gets "out of memory" here instead of gigabytes. */
#define JSB_MAX ((size_t)16 << 20)

void *ja_alloc(jarena *a, size_t n); /* zeroed; NULL (and a->oom) when out of memory */
char *ja_strndup(jarena *a, const char *s, size_t n);
void ja_release(jarena *a);

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} jsb;

void jsb_put(jsb *b, const char *s, size_t n);
void jsb_putc(jsb *b, char c);
void jsb_puts(jsb *b, const char *s);
void jsb_printf(jsb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Moves the text into the arena (jsb freed); NULL when out of memory. */
char *jsb_to_arena(jsb *b, jarena *a, size_t *len);

/* ----------------------------------------------------------------- lexer */
typedef enum {
    JT_DATA, JT_VAR_BEGIN, JT_VAR_END, JT_BLOCK_BEGIN, JT_BLOCK_END,
    JT_NAME, JT_STRING, JT_INT, JT_FLOAT, JT_OP, JT_EOF
} jtok_type;

typedef struct {
    jtok_type t;
    int line;
    const char *s; /* DATA / NAME / OP text, STRING decoded (arena) */
    size_t n;
    long long i;
    double f;
} jtok;

/* Tokenizes the whole template (whitespace control applied to DATA). */
int jinja_lex(const char *src, jarena *a, jtok **toks, size_t *n_toks, dms_err *err);

/* ------------------------------------------------------------------- AST */
typedef enum {
    /* statements */
    JN_DATA, JN_OUTPUT, JN_IF, JN_FOR, JN_SET, JN_SET_ATTR, JN_SET_BLOCK, JN_BREAK, JN_CONTINUE,
    JN_BODY, JN_MACRO,
    /* expressions */
    JN_CONST, JN_NAME, JN_GETATTR, JN_GETITEM, JN_SLICE, JN_CALL, JN_FILTER, JN_TEST,
    JN_BINOP, JN_NEG, JN_POS, JN_NOT, JN_AND, JN_OR, JN_COMPARE, JN_COND, JN_LIST, JN_TUPLE,
    JN_DICT
} jnode_kind;

typedef enum {
    JOP_ADD, JOP_SUB, JOP_MUL, JOP_DIV, JOP_FLOORDIV, JOP_MOD, JOP_POW, JOP_CONCAT,
    JOP_EQ, JOP_NE, JOP_LT, JOP_LE, JOP_GT, JOP_GE, JOP_IN, JOP_NOTIN
} jop;

typedef struct jnode jnode;
struct jnode {
    jnode_kind kind;
    int line;
    int neg;              /* JN_TEST: `is not` */
    const char *name;     /* NAME, GETATTR attribute, FILTER / TEST name, SET target */
    const char *name2;    /* SET_ATTR attribute */
    struct dms_jval *value; /* CONST */
    jnode *a, *b, *c, *d; /* children (see jinja_parse.c) */
    jnode **items;        /* body / arguments / list items / for targets / compare operands */
    size_t n_items;
    jop *ops;             /* COMPARE operators (n_items - 1) */
    const char **kw_names; /* keyword arguments of CALL / FILTER / TEST */
    jnode **kw_vals;
    size_t n_kw;
    jop op;               /* BINOP */
};

struct dms_jinja {
    jarena arena;
    jnode *root; /* JN_BODY */
};

/* ---------------------------------------------------------------- values */
typedef enum {
    JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_NS, JV_FUNC,
    JV_LOOP, /* a for loop's `loop`: i = index0, len = length, items = the items looped over */
    JV_MACRO /* a {% macro %}: node is its JN_MACRO */
} jv_type;

typedef enum { JF_RANGE = 1, JF_NAMESPACE, JF_RAISE, JF_STRFTIME, JF_DICT } jfunc;

typedef struct dms_jval jval;
struct dms_jval {
    jv_type t;
    int tuple;        /* LIST shown as a tuple */
    long long i;      /* BOOL, INT; FUNC: jfunc */
    double f;         /* FLOAT */
    const char *s;    /* STR (UTF-8), UNDEF: the name that was undefined (or NULL) */
    size_t n;
    jval **items;     /* LIST items; DICT / NS keys */
    jval **vals;      /* DICT / NS values */
    size_t len, cap;
    const jnode *node; /* MACRO */
};

struct dms_jinja_env {
    jarena arena;
    jval *vars; /* DICT of the template's variables */
    time_t now;
    int have_now;
};

jval *jv_new(jarena *a, jv_type t);
jval *jv_undef(jarena *a, const char *name);
jval *jv_int(jarena *a, long long i);
jval *jv_float(jarena *a, double f);
jval *jv_bool(jarena *a, int b);
jval *jv_str(jarena *a, const char *s, size_t n); /* copies */
jval *jv_str_nocopy(jarena *a, const char *s, size_t n);
int jv_push(jarena *a, jval *list, jval *item);
int jv_dict_put(jarena *a, jval *d, jval *key, jval *v); /* replaces an equal key */
jval *jv_dict_get(const jval *d, const char *key, size_t n); /* NULL if absent */
jval *jv_dict_getv(const jval *d, const jval *key);

int jv_truthy(const jval *v);
int jv_equal(const jval *a, const jval *b);
const char *jv_type_name(const jval *v); /* Python's name: 'str', 'int', 'NoneType', ... */
/* str(v) as Python / Jinja print it (undefined -> ""). */
void jv_to_str(jsb *b, const jval *v);
/* repr(v) as Python writes it inside a list. */
void jv_repr(jsb *b, const jval *v);
/* json.dumps(v, ensure_ascii=False, indent=indent (<0: None), sort_keys); -1 + message when v holds
 * something JSON cannot write. */
int jv_tojson(jsb *b, const jval *v, int indent, int sort_keys, dms_err *err);

/* Python str helpers over UTF-8 */
size_t py_space_at(const unsigned char *s, size_t n); /* bytes of a str.isspace() char at s, or 0 */
size_t utf8_len(const char *s, size_t n);             /* code points */
size_t utf8_next(const char *s, size_t n, size_t i);  /* byte index of the next code point */
uint32_t utf8_decode(const char *s, size_t n, size_t i, size_t *adv);
void utf8_put(jsb *b, uint32_t cp);

/* -------------------------------------------------------------- builtins */
int jinja_filter_known(const char *name);
int jinja_test_known(const char *name);
typedef struct {
    dms_jinja_env *env;
    jarena *a;
    dms_err *err;
    int line;
} jctx;
/* args[0] is the filtered value; kw parallel arrays. */
jval *jinja_filter(jctx *c, const char *name, jval **args, size_t n, const char **kwn, jval **kwv, size_t nkw);
/* returns 0/1, -1 on error */
int jinja_test(jctx *c, const char *name, jval *v, jval **args, size_t n);
jval *jinja_method(jctx *c, jval *obj, const char *name, jval **args, size_t n, const char **kwn, jval **kwv,
                   size_t nkw);
jval *jinja_call_func(jctx *c, jval *fn, jval **args, size_t n, const char **kwn, jval **kwv, size_t nkw);
/* The builtin global of that name (range, namespace, raise_exception, strftime_now, dict) or NULL. */
jval *jinja_global(jarena *a, const char *name);

#endif
