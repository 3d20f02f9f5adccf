/* bench_train.h - `dms bench train` (cli/bench_train.c): the time of one
 * DMS training step at a model's real shapes with random weights. */
#ifndef DMS_BENCH_TRAIN_H
#define DMS_BENCH_TRAIN_H

typedef struct dms_bench_train_opts {
    const char *model;   /* folder with config.json (bench/models/NAME) or .gguf: only its shapes are used */
    const char *backend; /* "cpu" or "cuda" */
    const char *out_dir; /* results folder */
    int tokens;          /* tokens per row (one row per step) */
    int docs;            /* documents packed in the row, of equal length */
    int steps;           /* timed steps, after one untimed warm-up step */
    int layers;          /* > 0: only the first N layers (a truncated model of the real width) */
    int window;          /* DMS eviction window */
    int lora_rank;       /* 0: heads only */
    int kd_chunk;        /* tokens per KD chunk through the LM head; 0: 128 on the CPU, 1024 on a GPU */
    double peak_tflops;  /* the device's dense bf16 peak for MFU; 0: from its name where known */
    int recompute_attention; /* 1: backward_attention recompute (the attention forward run again in the backward) */
} dms_bench_train_opts;

/* Runs the benchmark, prints a summary, writes the JSON; 0, 1 (failure) or
 * 2 (bad options). */
int dms_bench_train(const dms_bench_train_opts *o);

#endif
