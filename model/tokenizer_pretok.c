/* tokenizer_pretok.c - normalisation (utf8proc) and regex pre-tokenisation
 * (PCRE2, JIT when available) for the byte-level BPE tokenizer, kept apart
 * from the vocabulary/BPE code. Split semantics follow `tokenizers`
 * (NormalizedString::split with its five delimiter behaviours). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "model/tokenizer.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* `tokenizers`' ByteLevel regex (GPT-2), and llama.cpp's Llama 3 / Qwen2. */
const char *const DMS_REGEX_GPT2 =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char *const DMS_REGEX_LLAMA3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char *const DMS_REGEX_QWEN2 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

enum { STEP_NORM, STEP_SPLIT, STEP_PREFIX };

typedef struct {
    int kind;
    dms_norm_form form;
    pcre2_code *re;
    dms_split_behavior behavior;
    int invert;
} step;

struct dms_pretok {
    step *steps;
    size_t n_steps;
    char *sig;   /* canonical signature */
    char *name;  /* short name */
};

/* scratch behind dms_pretok_out.priv */
typedef struct {
    char **bufs;            /* owned strings made during the run */
    size_t n_bufs, cap_bufs;
    dms_piece *tmp;         /* the other half of the ping-pong */
    size_t tmp_cap;
    struct ev { size_t s, e; int m; } *evs;
    size_t ev_cap;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
} scratch;

static int append_str(char **s, const char *add) {
    size_t a = *s ? strlen(*s) : 0, b = strlen(add);
    char *n = realloc(*s, a + b + 1);
    if (!n) return -1;
    memcpy(n + a, add, b + 1);
    *s = n;
    return 0;
}

dms_pretok *dms_pretok_new(void) {
    dms_pretok *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->sig = calloc(1, 1);
    p->name = calloc(1, 1);
    if (!p->sig || !p->name) {
        dms_pretok_free(p);
        return NULL;
    }
    return p;
}

void dms_pretok_free(dms_pretok *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_steps; i++)
        if (p->steps[i].re) pcre2_code_free(p->steps[i].re);
    free(p->steps);
    free(p->sig);
    free(p->name);
    free(p);
}

static step *push_step(dms_pretok *p) {
    step *n = realloc(p->steps, (p->n_steps + 1) * sizeof *n);
    if (!n) return NULL;
    p->steps = n;
    step *s = &p->steps[p->n_steps++];
    memset(s, 0, sizeof *s);
    return s;
}

static int add_name(dms_pretok *p, const char *name) {
    if (p->name[0] && append_str(&p->name, "+")) return -1;
    return append_str(&p->name, name);
}

int dms_pretok_add_norm(dms_pretok *p, dms_norm_form f) {
    static const char *names[] = {"", "NFC", "NFD", "NFKC", "NFKD"};
    step *s = push_step(p);
    if (!s) return -1;
    s->kind = STEP_NORM;
    s->form = f;
    if (append_str(&p->sig, names[f]) || append_str(&p->sig, "|")) return -1;
    return add_name(p, names[f]);
}

int dms_pretok_add_prefix_space(dms_pretok *p) {
    step *s = push_step(p);
    if (!s) return -1;
    s->kind = STEP_PREFIX;
    if (append_str(&p->sig, "prefix_space|")) return -1;
    return add_name(p, "prefix");
}

int dms_pretok_add_split(dms_pretok *p, const char *pattern, int literal, dms_split_behavior b,
                         int invert, const char *where, dms_err *err) {
    int ec;
    PCRE2_SIZE eo;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return dms_errf(err, "%s: bad pre-tokenizer regex at offset %zu: %s", where, (size_t)eo,
                        (const char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter on failure */
    step *s = push_step(p);
    if (!s) {
        pcre2_code_free(re);
        return dms_errf(err, "%s: out of memory", where);
    }
    s->kind = STEP_SPLIT;
    s->re = re;
    s->behavior = b;
    s->invert = invert;
    char head[48];
    snprintf(head, sizeof head, "split:%d:%d:%d:", (int)b, invert, literal);
    if (append_str(&p->sig, head) || append_str(&p->sig, pattern) || append_str(&p->sig, "|"))
        return dms_errf(err, "%s: out of memory", where);
    const char *nm = "regex";
    if (!literal && !strcmp(pattern, DMS_REGEX_GPT2)) nm = "gpt2";
    else if (!literal && !strcmp(pattern, DMS_REGEX_LLAMA3)) nm = "llama3";
    else if (!literal && !strcmp(pattern, DMS_REGEX_QWEN2)) nm = "qwen2";
    else if (!literal && !strcmp(pattern, "\\p{N}")) nm = "digits";
    else if (!literal && !strcmp(pattern, "\\p{N}+")) nm = "numbers";
    if (add_name(p, nm)) return dms_errf(err, "%s: out of memory", where);
    return 0;
}

const char *dms_pretok_signature(const dms_pretok *p) { return p->sig; }
const char *dms_pretok_short_name(const dms_pretok *p) { return p->name[0] ? p->name : "none"; }

/* ---- running ---- */

static scratch *get_scratch(dms_pretok_out *out) {
    if (!out->priv) out->priv = calloc(1, sizeof(scratch));
    return out->priv;
}

static void reset_bufs(scratch *s) {
    for (size_t i = 0; i < s->n_bufs; i++) free(s->bufs[i]);
    s->n_bufs = 0;
}

void dms_pretok_out_free(dms_pretok_out *out) {
    if (!out) return;
    scratch *s = out->priv;
    if (s) {
        reset_bufs(s);
        free(s->bufs);
        free(s->tmp);
        free(s->evs);
        if (s->md) pcre2_match_data_free(s->md);
        if (s->mctx) pcre2_match_context_free(s->mctx);
        if (s->jstack) pcre2_jit_stack_free(s->jstack);
        free(s);
    }
    free(out->pieces);
    memset(out, 0, sizeof *out);
}

static char *own(scratch *s, char *buf) {
    if (!buf) return NULL;
    if (s->n_bufs == s->cap_bufs) {
        size_t nc = s->cap_bufs ? 2 * s->cap_bufs : 8;
        char **n = realloc(s->bufs, nc * sizeof *n);
        if (!n) {
            free(buf);
            return NULL;
        }
        s->bufs = n;
        s->cap_bufs = nc;
    }
    s->bufs[s->n_bufs++] = buf;
    return buf;
}

static int reserve(dms_piece **v, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    dms_piece *n = realloc(*v, nc * sizeof *n);
    if (!n) return -1;
    *v = n;
    *cap = nc;
    return 0;
}

static int push_ev(scratch *s, size_t *n, size_t st, size_t e, int m) {
    if (*n == s->ev_cap) {
        size_t nc = s->ev_cap ? 2 * s->ev_cap : 64;
        struct ev *v = realloc(s->evs, nc * sizeof *v);
        if (!v) return -1;
        s->evs = v;
        s->ev_cap = nc;
    }
    s->evs[(*n)++] = (struct ev){st, e, m};
    return 0;
}

static size_t utf8_len_at(const unsigned char *p, size_t left) {
    size_t n = (*p < 0x80) ? 1 : (*p >> 5) == 6 ? 2 : (*p >> 4) == 14 ? 3 : (*p >> 3) == 30 ? 4 : 1;
    return n > left ? left : n;
}

/* Finds the (match / gap) events of re over one piece. */
static int find_events(scratch *s, const pcre2_code *re, const char *subj, size_t len, size_t *n_ev,
                       dms_err *err) {
    size_t off = 0, prev = 0;
    *n_ev = 0;
    while (off <= len) {
        int rc = pcre2_match(re, (PCRE2_SPTR)subj, len, off, PCRE2_NO_UTF_CHECK, s->md, s->mctx);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !s->jstack) {
            s->mctx = pcre2_match_context_create(NULL);
            s->jstack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, NULL);
            if (!s->mctx || !s->jstack) return dms_errf(err, "pre-tokenizer: out of memory");
            pcre2_jit_stack_assign(s->mctx, NULL, s->jstack);
            continue;
        }
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return dms_errf(err, "pre-tokenizer: regex match failed: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty match: produces no piece; step one character */
            if (ms >= len) break;
            off = ms + utf8_len_at((const unsigned char *)subj + ms, len - ms);
            continue;
        }
        if (ms > prev && push_ev(s, n_ev, prev, ms, 0)) return dms_errf(err, "out of memory");
        if (push_ev(s, n_ev, ms, me, 1)) return dms_errf(err, "out of memory");
        prev = off = me;
    }
    if (prev < len && push_ev(s, n_ev, prev, len, 0)) return dms_errf(err, "out of memory");
    return 0;
}

/* Applies one split step to every piece in in[0..n_in) -> out. */
static int apply_split(scratch *s, const step *st, const dms_piece *in, size_t n_in, dms_piece **outv,
                       size_t *out_cap, size_t *n_out, dms_err *err) {
    *n_out = 0;
    for (size_t i = 0; i < n_in; i++) {
        size_t ne;
        if (find_events(s, st->re, in[i].ptr, in[i].len, &ne, err)) return -1;
        struct ev *ev = s->evs;
        if (st->invert)
            for (size_t k = 0; k < ne; k++) ev[k].m = !ev[k].m;
        /* fold the events as tokenizers' SplitDelimiterBehavior does */
        size_t nf = 0;
        int prev_match = 0;
        switch (st->behavior) {
        case DMS_SPLIT_REMOVED:
            for (size_t k = 0; k < ne; k++)
                if (!ev[k].m) ev[nf++] = ev[k];
            break;
        case DMS_SPLIT_ISOLATED:
            nf = ne;
            break;
        case DMS_SPLIT_MERGED_WITH_PREVIOUS:
            for (size_t k = 0; k < ne; k++) {
                if (ev[k].m && !prev_match && nf > 0) ev[nf - 1].e = ev[k].e;
                else ev[nf++] = ev[k];
                prev_match = ev[k].m;
            }
            break;
        case DMS_SPLIT_MERGED_WITH_NEXT:
            /* walk backwards, then the kept events are at the end, reversed */
            for (size_t k = ne; k-- > 0;) {
                struct ev cur = ev[k];
                if (cur.m && !prev_match && nf > 0) ev[ne - nf].s = cur.s;
                else {
                    nf++;
                    ev[ne - nf] = cur;
                }
                prev_match = cur.m;
            }
            memmove(ev, ev + (ne - nf), nf * sizeof *ev);
            break;
        case DMS_SPLIT_CONTIGUOUS:
            for (size_t k = 0; k < ne; k++) {
                if (ev[k].m == prev_match && nf > 0) ev[nf - 1].e = ev[k].e;
                else ev[nf++] = ev[k];
                prev_match = ev[k].m;
            }
            break;
        }
        if (reserve(outv, out_cap, *n_out + nf)) return dms_errf(err, "out of memory");
        for (size_t k = 0; k < nf; k++)
            if (ev[k].e > ev[k].s)
                (*outv)[(*n_out)++] = (dms_piece){in[i].ptr + ev[k].s, ev[k].e - ev[k].s};
    }
    return 0;
}

static int is_ascii(const char *t, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] >= 0x80) return 0;
    return 1;
}

int dms_pretok_run(const dms_pretok *p, const char *text, size_t len, dms_pretok_out *out,
                   dms_err *err) {
    scratch *s = get_scratch(out);
    if (!s) return dms_errf(err, "out of memory");
    reset_bufs(s);
    if (!s->md && !(s->md = pcre2_match_data_create(1, NULL))) return dms_errf(err, "out of memory");
    out->n = 0;
    if (len == 0) return 0;
    if (reserve(&out->pieces, &out->cap, 1)) return dms_errf(err, "out of memory");
    out->pieces[0] = (dms_piece){text, len};
    out->n = 1;
    for (size_t k = 0; k < p->n_steps; k++) {
        const step *st = &p->steps[k];
        if (st->kind == STEP_NORM) {
            /* normalisers run on the whole text before any split */
            for (size_t i = 0; i < out->n; i++) {
                if (is_ascii(out->pieces[i].ptr, out->pieces[i].len)) continue;
                static const int opt[] = {0, UTF8PROC_COMPOSE, UTF8PROC_DECOMPOSE,
                                          UTF8PROC_COMPOSE | UTF8PROC_COMPAT,
                                          UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT};
                utf8proc_uint8_t *dst = NULL;
                utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)out->pieces[i].ptr,
                                                  (utf8proc_ssize_t)out->pieces[i].len, &dst,
                                                  (utf8proc_option_t)(UTF8PROC_STABLE | opt[st->form]));
                if (r < 0) return dms_errf(err, "normaliser: %s", utf8proc_errmsg(r));
                if (!own(s, (char *)dst)) return dms_errf(err, "out of memory");
                out->pieces[i] = (dms_piece){(const char *)dst, (size_t)r};
            }
        } else if (st->kind == STEP_PREFIX) {
            for (size_t i = 0; i < out->n; i++) {
                dms_piece *pc = &out->pieces[i];
                if (pc->len > 0 && pc->ptr[0] == ' ') continue;
                char *b = own(s, malloc(pc->len + 1));
                if (!b) return dms_errf(err, "out of memory");
                b[0] = ' ';
                memcpy(b + 1, pc->ptr, pc->len);
                *pc = (dms_piece){b, pc->len + 1};
            }
        } else {
            size_t n_new;
            if (apply_split(s, st, out->pieces, out->n, &s->tmp, &s->tmp_cap, &n_new, err)) return -1;
            dms_piece *tv = out->pieces;
            size_t tc = out->cap;
            out->pieces = s->tmp;
            out->cap = s->tmp_cap;
            out->n = n_new;
            s->tmp = tv;
            s->tmp_cap = tc;
        }
    }
    return 0;
}
