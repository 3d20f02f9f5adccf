/* bench_decode.h - `dms bench decode --cpu` (cli/bench_decode.c): our CPU
 * decode against llama.cpp's on the same GGUF, vanilla and DMS. */
#ifndef DMS_BENCH_DECODE_H
#define DMS_BENCH_DECODE_H

#include <cjson/cJSON.h>

#include "kernels/backend.h"
#include "runtime/generate.h"

typedef struct dms_bench_decode_opts {
    const char *model;      /* the GGUF both runtimes read */
    const char *dms4, *dms8; /* adapter-variant DMS exports of runs on that GGUF (NULL: not timed) */
    const char *contexts;   /* "128,2048,8192": the position of the last decoded token + 1 */
    const char *text;       /* the prompt text, repeated to length */
    const char *python;     /* the interpreter that imports llama_cpp */
    const char *out_dir;    /* results folder */
    int tokens, threads;
    dms_dtype kv_dtype;     /* our KV cache rows (llama.cpp keeps f16) */
} dms_bench_decode_opts;

/* Runs the benchmark, prints a table, writes the JSON; 0, 1 (failure) or 2 (bad options). */
int dms_bench_decode(const dms_bench_decode_opts *o);

/* A generation's token counts, times and tokens/s into o (cli/cmd_generate.c;
 * shared by its --stats-json and the bench's records). */
void dms_gen_timing_json(cJSON *o, const dms_gen_stats *s);

#endif
