/* bench_attention.c - `dms bench attention`: the DMS attention of training
 * alone (attention_dms_fwd, then attention_dms_bwd with the decision-logit
 * gradient), through the op table of the chosen backend, on random inputs
 * at one shape: GQA heads, head dim, one packed row of --tokens tokens in
 * --docs documents, the log-keep bias past --window. One untimed warm-up,
 * then --steps timed repetitions; the medians of the forward and of the
 * backward are reported with their TFLOPS, counted as docs/training.md
 * counts attention in a step: forward 4 * pairs * H * head_dim (scores and
 * P V), backward twice that (no recompute). Its peer is
 * bench/sdpa_peer.py (PyTorch's plain causal SDPA, cuDNN and flash, same
 * shape), the reference of issue 14's attention goal. The result goes to
 * bench/results/attention-H<h>-KV<kv>-D<d>-<tokens>-<backend>-<date>.json. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/bench_attention.h"
#include "cli/bench_host.h"
#include "core/fs.h"
#include "kernels/registry.h"
#include "train/progress.h"

enum { B_Q, B_K, B_V, B_LK, B_OUT, B_DOUT, B_DQ, B_DK, B_DV, B_DLK, B_N };

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *t, int n) {
    qsort(t, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static int check_opts(const dms_bench_attention_opts *o) {
    const char *bad = o->tokens < 16 ? "--tokens must be at least 16"
                      : o->docs < 1 || o->docs > o->tokens ? "--docs must be between 1 and --tokens"
                      : o->heads < 1 || o->kv_heads < 1 || o->heads % o->kv_heads
                          ? "--heads must be a positive multiple of --kv-heads"
                      : o->head_dim < 2 || o->head_dim % 2 ? "--head-dim must be even and positive"
                      : o->window < 1 ? "--window must be positive"
                      : o->steps < 1 ? "--steps must be positive"
                                     : NULL;
    if (bad) fprintf(stderr, "dms bench attention: %s\n", bad);
    return bad ? 2 : 0;
}

/* Uniform floats in [lo, hi) from a xorshift state. */
static void fill(float *x, size_t n, uint64_t *s, float lo, float hi) {
    for (size_t i = 0; i < n; i++) {
        *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
        x[i] = lo + (hi - lo) * (float)((*s >> 40) * (1.0 / 16777216.0));
    }
}

static int write_result(const dms_bench_attention_opts *o, const dms_backend *be, const char *device, double pairs,
                        double *fwd, double *bwd, double flops_fwd, dms_err *err) {
    char date[32], commit[96], path[1200];
    const time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    dms_bench_source_revision(commit, sizeof commit);
    const double f = median(fwd, o->steps), b = median(bwd, o->steps); /* sorts them */
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "benchmark", "DMS training attention, forward and backward (op table)");
    cJSON_AddStringToObject(root, "date", date);
    cJSON_AddStringToObject(root, "commit", commit);
    cJSON_AddStringToObject(root, "backend", be->name);
    cJSON_AddStringToObject(root, "device", device);
    cJSON_AddNumberToObject(root, "tokens", o->tokens);
    cJSON_AddNumberToObject(root, "docs", o->docs);
    cJSON_AddNumberToObject(root, "heads", o->heads);
    cJSON_AddNumberToObject(root, "kv_heads", o->kv_heads);
    cJSON_AddNumberToObject(root, "head_dim", o->head_dim);
    cJSON_AddNumberToObject(root, "window", o->window);
    cJSON_AddNumberToObject(root, "steps_timed", o->steps);
    cJSON_AddNumberToObject(root, "causal_pairs", pairs);
    cJSON_AddNumberToObject(root, "forward_s_median", f);
    cJSON_AddNumberToObject(root, "backward_s_median", b);
    cJSON_AddNumberToObject(root, "fwd_bwd_s_median", f + b);
    cJSON_AddNumberToObject(root, "forward_flops", flops_fwd);
    cJSON_AddNumberToObject(root, "backward_flops", 2 * flops_fwd);
    cJSON_AddStringToObject(root, "flops_formula", "forward 4 * causal_pairs * heads * head_dim; backward 2x forward");
    cJSON_AddNumberToObject(root, "forward_tflops", flops_fwd / f / 1e12);
    cJSON_AddNumberToObject(root, "backward_tflops", 2 * flops_fwd / b / 1e12);
    cJSON *ft = cJSON_AddArrayToObject(root, "forward_s_sorted"), *bt = cJSON_AddArrayToObject(root, "backward_s_sorted");
    for (int s = 0; s < o->steps; s++) {
        cJSON_AddItemToArray(ft, cJSON_CreateNumber(fwd[s]));
        cJSON_AddItemToArray(bt, cJSON_CreateNumber(bwd[s]));
    }
    printf("attention H %d KV %d D %d, %d tokens (%d document%s), window %d, %s on %s\n", o->heads, o->kv_heads,
           o->head_dim, o->tokens, o->docs, o->docs > 1 ? "s" : "", o->window, be->name, device);
    printf("forward %.5f s (%.2f TFLOPS), backward %.5f s (%.2f TFLOPS), both %.5f s (median of %d)\n", f,
           flops_fwd / f / 1e12, b, 2 * flops_fwd / b / 1e12, f + b, o->steps);
    snprintf(path, sizeof path, "%s/attention-H%d-KV%d-D%d-%d-%s-%.10s.json", o->out_dir, o->heads, o->kv_heads,
             o->head_dim, o->tokens, be->name, date);
    int rc = dms_mkdir_p(o->out_dir, err) != 0 || dms_write_json(path, root, err) != 0 ? -1 : 0;
    if (rc == 0) printf("-> %s\n", path);
    cJSON_Delete(root);
    return rc;
}

int dms_bench_attention(const dms_bench_attention_opts *o) {
    if (check_opts(o)) return 2;
    dms_err err = {0};
    dms_backend be;
    if (dms_backend_open(&be, o->backend, 0, &err) != 0) {
        fprintf(stderr, "dms bench attention: %s\n", err.msg);
        return 1;
    }
    const size_t T = (size_t)o->tokens, H = (size_t)o->heads, KV = (size_t)o->kv_heads, D = (size_t)o->head_dim;
    const size_t n[B_N] = {T * H * D, T * KV * D, T * KV * D, T * KV, T * H * D, T * H * D,
                           T * H * D, T * KV * D, T * KV * D, T * KV};
    float *buf[B_N] = {0}, *lse = NULL;
    int32_t *seg = NULL;
    float *host = malloc(sizeof(float) * n[B_Q]);
    int32_t *hseg = malloc(sizeof(int32_t) * T);
    double *fwd = calloc((size_t)o->steps, sizeof(double)), *bwd = calloc((size_t)o->steps, sizeof(double));
    int rc = host && hseg && fwd && bwd ? 0 : dms_errf(&err, "out of host memory");
    for (int i = 0; i < B_N && rc == 0; i++)
        if (!(buf[i] = be.alloc(be.ctx, sizeof(float) * n[i])))
            rc = dms_errf(&err, "%s: out of memory for %zu floats", be.name, n[i]);
    if (rc == 0 && (!(lse = be.alloc(be.ctx, sizeof(float) * T * H)) || !(seg = be.alloc(be.ctx, sizeof(int32_t) * T))))
        rc = dms_errf(&err, "%s: out of memory", be.name);
    double pairs = 0;
    if (rc == 0) { /* random q, k, v, dout; log-keep in [-4, 0): keys past the window kept with p in (0.02, 1] */
        uint64_t s = 0x9e3779b97f4a7c15ull;
        const int in[] = {B_Q, B_K, B_V, B_DOUT, B_LK};
        for (int i = 0; i < 5; i++) {
            fill(host, n[in[i]], &s, in[i] == B_LK ? -4.0f : -1.0f, in[i] == B_LK ? 0.0f : 1.0f);
            dms_upload_f32(&be, buf[in[i]], host, n[in[i]]);
        }
        for (size_t t = 0; t < T; t++) hseg[t] = (int32_t)((int64_t)t * o->docs / o->tokens);
        for (size_t i = 0; i < T;) {
            size_t j = i;
            while (j < T && hseg[j] == hseg[i]) j++;
            pairs += (double)(j - i) * (double)(j - i + 1) / 2;
            i = j;
        }
        dms_upload_i32(&be, seg, hseg, T);
    }
    char device[160] = "unknown"; /* the GPU's name, else the CPU's */
    size_t used = 0, total = 0;
    if (!be.device_info) dms_bench_read_line("/proc/cpuinfo", "model name", device, sizeof device);
    else if (be.device_info(be.ctx, device, sizeof device, &used, &total) != 0) snprintf(device, sizeof device, "unknown");
    const float scale = 1.0f / sqrtf((float)D);
    for (int s = -1; s < o->steps && rc == 0; s++) { /* s = -1: the warm-up */
        be.sync(be.ctx);
        const double a = dms_now_s();
        be.attention_dms_fwd(be.ctx, buf[B_OUT], lse, buf[B_Q], buf[B_K], buf[B_V], buf[B_LK], seg, o->tokens,
                             o->heads, o->kv_heads, o->head_dim, o->window, scale);
        be.sync(be.ctx);
        const double b = dms_now_s();
        be.attention_dms_bwd(be.ctx, buf[B_DQ], buf[B_DK], buf[B_DV], buf[B_DLK], buf[B_DOUT], buf[B_OUT], lse,
                             buf[B_Q], buf[B_K], buf[B_V], buf[B_LK], seg, o->tokens, o->heads, o->kv_heads,
                             o->head_dim, o->window, scale);
        be.sync(be.ctx);
        const double c = dms_now_s();
        if (be.status(be.ctx, err.msg, sizeof err.msg) != 0) rc = -1;
        if (s >= 0) fwd[s] = b - a, bwd[s] = c - b;
    }
    if (rc == 0) { /* the outputs must be finite: a benchmark of a broken kernel is no measurement */
        dms_download_f32(&be, host, buf[B_DQ], n[B_DQ]);
        for (size_t i = 0; i < n[B_DQ] && rc == 0; i++)
            if (!isfinite(host[i])) rc = dms_errf(&err, "%s: dq[%zu] is not finite", be.name, i);
    }
    if (rc == 0) rc = write_result(o, &be, device, pairs, fwd, bwd, 4.0 * pairs * (double)(H * D), &err);
    if (rc != 0) fprintf(stderr, "dms bench attention: %s\n", err.msg);
    for (int i = 0; i < B_N; i++)
        if (buf[i]) be.free(be.ctx, buf[i]);
    if (lse) be.free(be.ctx, lse);
    if (seg) be.free(be.ctx, seg);
    free(host), free(hseg), free(fwd), free(bwd);
    dms_backend_close(&be);
    return rc ? 1 : 0;
}
