/* bench_attention.h - `dms bench attention` (cli/bench_attention.c): the
 * time of the training DMS attention alone, forward and backward, through
 * the backend's op table. */
#ifndef DMS_BENCH_ATTENTION_H
#define DMS_BENCH_ATTENTION_H

typedef struct dms_bench_attention_opts {
    const char *backend; /* "cpu" or "cuda" */
    const char *out_dir; /* results folder */
    int tokens;          /* T: tokens of the one packed row */
    int docs;            /* documents of equal length in the row */
    int heads, kv_heads, head_dim;
    int window; /* DMS eviction window: keys further back get the log-keep bias */
    int steps;  /* timed repetitions of forward + backward, after one warm-up */
} dms_bench_attention_opts;

/* Runs the benchmark, prints a summary, writes the JSON; 0, 1 (failure) or
 * 2 (bad options). */
int dms_bench_attention(const dms_bench_attention_opts *o);

#endif
