/* args.h - declarative flag parsing shared by every subcommand: each
 * command lists its flags once, and the same table drives parsing, type
 * checks, unknown-flag errors and the --help text. */
#ifndef DMS_ARGS_H
#define DMS_ARGS_H

typedef enum { ARG_STR, ARG_INT, ARG_FLOAT, ARG_BOOL, ARG_U64 } dms_arg_type;

typedef struct dms_arg {
    const char *name; /* "--model" */
    dms_arg_type type;
    void *dst;        /* const char**, int*, float*, int* (bool), uint64_t* */
    const char *metavar;
    const char *help;
} dms_arg;

typedef struct dms_cmd_spec {
    const char *name;      /* "generate" */
    const char *summary;   /* one line */
    const char *usage;     /* "dms generate --model PATH --prompt TEXT [options]" */
    const dms_arg *args;
    int n_args;
    const char *positional; /* name of the single optional positional, or NULL */
    const char **positional_dst;
    const char *epilog;    /* examples, or NULL */
} dms_cmd_spec;

/* Parses argv (argv[0] is the subcommand name). Returns 0 on success,
 * 1 if --help was printed, -1 on error (message printed to stderr). */
int dms_args_parse(const dms_cmd_spec *spec, int argc, char **argv);
void dms_args_help(const dms_cmd_spec *spec);

#endif
