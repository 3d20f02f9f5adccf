/* eval_answer.c - reading a model's answer out of its text (eval.h): the
 * last \boxed{...} with nested braces balanced (kvpress cuts at the first
 * '}', which turns \boxed{\frac{a}{b}} into "\frac{a"), its normalisation
 * to an integer for AIME, and the chosen letter of a multiple-choice
 * question from \boxed{X} or "Answer: X". */
#include "runtime/eval.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The end (index of the matching '}') of a brace group opening at s[open],
 * or -1 when it never closes. */
static long brace_end(const char *s, long open) {
    int depth = 0;
    for (long i = open; s[i]; i++) {
        if (s[i] == '\\' && s[i + 1] && (s[i + 1] == '{' || s[i + 1] == '}')) {
            i++; /* \{ and \} are literal braces */
            continue;
        }
        if (s[i] == '{') depth++;
        else if (s[i] == '}' && --depth == 0) return i;
    }
    return -1;
}

/* Start of the last complete box (its '{'), the end in *end; -1 if none. */
static long last_box(const char *text, long *end) {
    static const char *const names[] = {"\\boxed", "\\fbox"};
    long best = -1;
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        const size_t nl = strlen(names[k]);
        for (const char *p = strstr(text, names[k]); p; p = strstr(p + 1, names[k])) {
            long open = (long)(p - text) + (long)nl;
            while (text[open] == ' ') open++;
            if (text[open] != '{') continue;
            const long e = brace_end(text, open);
            if (e >= 0 && open > best) {
                best = open;
                *end = e;
            }
        }
    }
    return best;
}

char *dms_eval_last_boxed(const char *text) {
    if (!text) return NULL;
    long end = 0;
    const long open = last_box(text, &end);
    if (open < 0) return NULL;
    const size_t n = (size_t)(end - open - 1);
    char *out = malloc(n + 1);
    if (!out) return NULL;
    memcpy(out, text + open + 1, n);
    out[n] = '\0';
    return out;
}

/* Removes a wrapper "\name{...}" around the whole of s (in place). */
static int unwrap(char *s, const char *name) {
    const size_t nl = strlen(name);
    if (strncmp(s, name, nl) || s[nl] != '{') return 0;
    const long e = brace_end(s, (long)nl);
    if (e < 0 || s[e + 1] != '\0') return 0;
    memmove(s, s + nl + 1, (size_t)(e - (long)nl - 1));
    s[e - (long)nl - 1] = '\0';
    return 1;
}

static void trim(char *s) {
    size_t n = strlen(s), a = 0;
    while (a < n && isspace((unsigned char)s[a])) a++;
    while (n > a && isspace((unsigned char)s[n - 1])) n--;
    memmove(s, s + a, n - a);
    s[n - a] = '\0';
}

/* Deletes every occurrence of pat from s. */
static void erase_all(char *s, const char *pat) {
    const size_t pl = strlen(pat);
    for (char *p = strstr(s, pat); p; p = strstr(p, pat)) memmove(p, p + pl, strlen(p + pl) + 1);
}

static int thousands_ok(const char *p) {
    int k = 0;
    while (isdigit((unsigned char)p[k])) k++;
    if (k < 1 || k > 3 || p[k] != ',') return 0;
    for (p += k; *p == ','; p += 4)
        for (int i = 1; i <= 3; i++)
            if (!isdigit((unsigned char)p[i])) return 0;
    return *p == '\0' || *p == '.';
}

int dms_eval_parse_int(const char *in, long long *out) {
    if (!in) return -1;
    char *s = strdup(in);
    if (!s) return -1;
    for (int changed = 1; changed;) { /* peel wrappers in any order */
        changed = 0;
        trim(s);
        size_t n = strlen(s);
        if (n >= 2 && s[0] == '$' && s[n - 1] == '$') {
            memmove(s, s + 1, n - 2);
            s[n - 2] = '\0';
            changed = 1;
        }
        static const char *const wrappers[] = {"\\text", "\\textbf", "\\mathrm", "\\mathbf", "\\boxed"};
        for (size_t k = 0; k < sizeof wrappers / sizeof wrappers[0]; k++) changed |= unwrap(s, wrappers[k]);
    }
    static const char *const spacing[] = {"\\,", "\\!", "\\;", "\\ ", "{,}", " "};
    for (size_t k = 0; k < sizeof spacing / sizeof spacing[0]; k++) erase_all(s, spacing[k]);
    /* thousands separators: 1-3 digits, then groups of exactly three */
    const char *p = s[0] == '+' || s[0] == '-' ? s + 1 : s;
    if (strchr(p, ',')) {
        if (!thousands_ok(p)) {
            free(s);
            return -1;
        }
        erase_all(s, ",");
    }
    /* a zero fraction */
    char *dot = strchr(s, '.');
    if (dot) {
        for (const char *q = dot + 1; *q; q++)
            if (*q != '0') {
                free(s);
                return -1;
            }
        *dot = '\0';
    }
    const char *d = s;
    if (*d == '+' || *d == '-') d++;
    int ok = *d != '\0';
    for (const char *q = d; ok && *q; q++) ok = isdigit((unsigned char)*q);
    long long v = 0;
    if (ok) {
        errno = 0;
        v = strtoll(s[0] == '+' ? s + 1 : s, NULL, 10);
        ok = errno == 0;
    }
    free(s);
    if (!ok) return -1;
    *out = v;
    return 0;
}

/* A letter in range at s[0] standing alone (not the start of a word). */
static int lone_letter(const char *s, int n_choices) {
    if (s[0] < 'A' || s[0] >= 'A' + n_choices) return 0;
    return !isalnum((unsigned char)s[1]) ? s[0] : 0;
}

/* The letter inside a box's content: "B", "(B)", "\text{B}", "B) text". */
static int box_letter(char *content, int n_choices) {
    for (int changed = 1; changed;) {
        changed = 0;
        trim(content);
        static const char *const wrappers[] = {"\\text", "\\textbf", "\\mathrm", "\\mathbf"};
        for (size_t k = 0; k < sizeof wrappers / sizeof wrappers[0]; k++) changed |= unwrap(content, wrappers[k]);
    }
    const char *s = content;
    if (*s == '(') s++;
    return lone_letter(s, n_choices);
}

int dms_eval_choice_letter(const char *text, int n_choices) {
    if (!text || n_choices < 1 || n_choices > 26) return 0;
    long best_at = -1;
    int best = 0;
    /* "Answer: X" in any case, with optional markdown bold and parentheses */
    for (const char *p = text; *p; p++) {
        if (strncasecmp(p, "answer", 6)) continue;
        const char *q = p + 6;
        while (*q == '*' || *q == ' ') q++;
        if (*q != ':') continue;
        q++;
        while (*q == ' ' || *q == '*' || *q == '$' || *q == '(') q++;
        const int l = lone_letter(q, n_choices);
        if (l) {
            best_at = (long)(p - text);
            best = l;
        }
    }
    long end = 0;
    const long open = last_box(text, &end);
    if (open > best_at) {
        char *content = dms_eval_last_boxed(text);
        const int l = content ? box_letter(content, n_choices) : 0;
        free(content);
        if (l) best = l;
    }
    return best;
}
