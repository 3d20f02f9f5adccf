/* args.c - the flag parser and help printer (args.h). */
#include "cli/args.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dms_args_help(const dms_cmd_spec *spec) {
    printf("%s\n\nusage: %s\n\noptions:\n", spec->summary, spec->usage);
    for (int i = 0; i < spec->n_args; i++) {
        const dms_arg *a = &spec->args[i];
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", a->name, a->metavar ? " " : "", a->metavar ? a->metavar : "");
        printf("  %-24s %s\n", left, a->help);
    }
    printf("  %-24s %s\n", "-h, --help", "show this help");
    if (spec->epilog) printf("\n%s\n", spec->epilog);
}

static int parse_value(const dms_cmd_spec *spec, const dms_arg *a, const char *v) {
    char *end = NULL;
    errno = 0;
    switch (a->type) {
    case ARG_STR: *(const char **)a->dst = v; return 0;
    case ARG_INT: {
        long x = strtol(v, &end, 10);
        if (errno || !*v || *end || x < -2147483647L || x > 2147483647L) break;
        *(int *)a->dst = (int)x;
        return 0;
    }
    case ARG_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || !*v || *end || v[0] == '-') break;
        *(uint64_t *)a->dst = x;
        return 0;
    }
    case ARG_FLOAT: {
        float x = strtof(v, &end);
        if (errno || !*v || *end) break;
        *(float *)a->dst = x;
        return 0;
    }
    case ARG_BOOL: break;
    }
    fprintf(stderr, "dms %s: %s expects %s, got '%s'\n", spec->name, a->name,
            a->type == ARG_FLOAT ? "a number" : "an integer", v);
    return -1;
}

int dms_args_parse(const dms_cmd_spec *spec, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            dms_args_help(spec);
            return 1;
        }
        if (s[0] == '-' && s[1] == '-') {
            const char *eq = strchr(s, '=');
            size_t len = eq ? (size_t)(eq - s) : strlen(s);
            const dms_arg *a = NULL;
            for (int k = 0; k < spec->n_args; k++)
                if (strlen(spec->args[k].name) == len && !strncmp(spec->args[k].name, s, len)) a = &spec->args[k];
            if (!a) {
                fprintf(stderr, "dms %s: unknown flag '%.*s' (see 'dms %s --help')\n", spec->name, (int)len, s,
                        spec->name);
                return -1;
            }
            if (a->type == ARG_BOOL) {
                if (eq) {
                    fprintf(stderr, "dms %s: %s takes no value\n", spec->name, a->name);
                    return -1;
                }
                *(int *)a->dst = 1;
                continue;
            }
            const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v) {
                fprintf(stderr, "dms %s: %s needs a value\n", spec->name, a->name);
                return -1;
            }
            if (parse_value(spec, a, v) != 0) return -1;
        } else if (s[0] == '-' && s[1] != '\0') {
            fprintf(stderr, "dms %s: unknown flag '%s' (see 'dms %s --help')\n", spec->name, s, spec->name);
            return -1;
        } else if (spec->positional && spec->positional_dst && !*spec->positional_dst) {
            *spec->positional_dst = s;
        } else {
            fprintf(stderr, "dms %s: unexpected argument '%s' (see 'dms %s --help')\n", spec->name, s, spec->name);
            return -1;
        }
    }
    return 0;
}
