/* jinja.h - a Jinja2 subset, enough for Hugging Face chat templates, run the
 * way transformers runs them (ImmutableSandboxedEnvironment with
 * trim_blocks, lstrip_blocks, loop controls, its tojson, raise_exception and
 * strftime_now). The model's own template text is parsed once
 * (dms_jinja_parse) and rendered against variables built in a render
 * environment (dms_jinja_env). Constructs outside the subset are an error
 * naming the construct and its line, at parse time where the name is known
 * (statements, filters, tests) and at render time otherwise (methods,
 * operand types). model/chat_template.c is the chat-specific layer on top. */
#ifndef DMS_JINJA_H
#define DMS_JINJA_H

#include <stddef.h>
#include <time.h>

#include "core/err.h"

typedef struct dms_jinja dms_jinja;         /* a parsed template */
typedef struct dms_jinja_env dms_jinja_env; /* variables + memory of one render */
typedef struct dms_jval dms_jval;           /* a value owned by an env */

/* Parses template source (UTF-8, NUL-terminated). NULL + message on a syntax
 * error or an unsupported statement / filter / test. */
dms_jinja *dms_jinja_parse(const char *src, dms_err *err);
void dms_jinja_free(dms_jinja *t);

/* A render environment. Values made by it live until it is freed. */
dms_jinja_env *dms_jinja_env_new(void);
void dms_jinja_env_free(dms_jinja_env *e);
/* Value constructors; NULL when out of memory. */
dms_jval *dms_jinja_none(dms_jinja_env *e);
dms_jval *dms_jinja_bool(dms_jinja_env *e, int b);
dms_jval *dms_jinja_str(dms_jinja_env *e, const char *s, size_t len);
dms_jval *dms_jinja_list(dms_jinja_env *e);
dms_jval *dms_jinja_dict(dms_jinja_env *e);
int dms_jinja_list_add(dms_jinja_env *e, dms_jval *list, dms_jval *item);        /* -1 on OOM */
int dms_jinja_dict_set(dms_jinja_env *e, dms_jval *dict, const char *key, dms_jval *v); /* -1 on OOM */
/* Defines a template variable (a later call with the same name replaces it). */
int dms_jinja_set(dms_jinja_env *e, const char *name, dms_jval *v);
/* The clock strftime_now() reads (default: the time of the call). */
void dms_jinja_set_time(dms_jinja_env *e, time_t now);

/* Renders; returns malloc'd NUL-terminated text (*len its length if len is
 * not NULL), or NULL + message (raise_exception's message, or the failing
 * construct and its line). */
char *dms_jinja_render(const dms_jinja *t, dms_jinja_env *e, size_t *len, dms_err *err);

#endif
