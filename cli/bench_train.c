/* bench_train.c - `dms bench train`: the time of one DMS training step at a
 * model's real shapes (bench/models/NAME: config.json only) with random
 * weights, on the CPU or the GPU. One untimed warm-up step (allocations,
 * library heuristics), then --steps timed steps of one packed row of
 * --tokens tokens; reported: the median step time, tokens/s, the model
 * FLOPs of a step (train/step_flops.h) and MFU against the device's dense
 * bf16 peak, peak memory, and the mean time of each phase (setup, teacher,
 * student, KD, backward, optimizer). A measurement, not a test; the result
 * goes to bench/results/train-<model>-<tokens>-<device>-<date>.json. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cli/bench_host.h"
#include "cli/bench_train.h"
#include "core/fs.h"
#include "kernels/registry.h"
#include "model/model.h"
#include "model/model_random.h"
#include "train/progress.h"
#include "train/step_flops.h"
#include "train/trainer.h"

#define PHASES (DMS_PHASE_N + 1) /* the trainer's phases, then the optimizer */

/* Dense bf16 tensor-core peak (TFLOPS, without sparsity) by device name;
 * 0 where not known. */
static double known_peak_tflops(const char *name) {
    if (strstr(name, "H100") && strstr(name, "PCIe")) return 756.0;
    if (strstr(name, "H100") || strstr(name, "H200") || strstr(name, "H800")) return 989.4;
    if (strstr(name, "A100")) return 312.0;
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Memory in use now: the device's (GPU) or the process's peak resident set (CPU). */
static double memory_bytes(const dms_backend *be, char *device, size_t cap) {
    size_t used = 0, total = 0;
    if (be->device_info && be->device_info(be->ctx, device, cap, &used, &total) == 0) return (double)used;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss * 1024.0;
}

static int check_opts(const dms_bench_train_opts *o) {
    const char *bad = o->tokens < 16 ? "--tokens must be at least 16"
                      : o->docs < 1 || o->docs > o->tokens ? "--docs must be between 1 and --tokens"
                      : o->steps < 1 ? "--steps must be positive"
                      : o->layers < 0 ? "--layers must be >= 0 (0: every layer)"
                      : o->window < 1 ? "--window must be positive"
                      : o->lora_rank < 0 ? "--lora-rank must be >= 0"
                      : o->kd_chunk < 0 ? "--kd-chunk must be >= 0"
                      : o->peak_tflops < 0 ? "--peak-tflops must be >= 0"
                      : NULL;
    if (bad) fprintf(stderr, "dms bench train: %s\n", bad);
    return bad ? 2 : 0;
}

int dms_bench_train(const dms_bench_train_opts *o) {
    if (check_opts(o)) return 2;
    dms_err err = {0};
    dms_backend be;
    if (dms_backend_open(&be, o->backend, 0, &err) != 0) {
        fprintf(stderr, "dms bench train: %s\n", err.msg);
        return 1;
    }
    dms_model m;
    const double t0 = dms_now_s();
    if (dms_model_init_random(&m, o->model, &be, 7, o->layers, 1, &err) != 0) {
        fprintf(stderr, "dms bench train: %s\n", err.msg);
        dms_backend_close(&be);
        return 1;
    }
    const double t_init = dms_now_s() - t0;
    dms_train_config cfg;
    dms_train_config_defaults(&cfg);
    cfg.max_len = o->tokens;
    cfg.window = o->window;
    cfg.lora_rank = o->lora_rank;
    /* a GPU wants large chunks: each one reads the whole LM head (1.2 GB at Qwen3's vocabulary and 4096 wide) */
    cfg.kd_chunk = o->kd_chunk > 0 ? o->kd_chunk : strcmp(be.name, "cpu") ? 1024 : 128;
    cfg.cr_final = 8;
    cfg.backward_attention = o->recompute_attention ? DMS_ATT_RECOMPUTE : DMS_ATT_KEEP;
    dms_trainer *tr = dms_trainer_create(&m, &cfg, &err);
    if (!tr) {
        fprintf(stderr, "dms bench train: %s\n", err.msg);
        dms_model_free(&m);
        dms_backend_close(&be);
        return 1;
    }
    /* one row: random ids (an EOS among them only leaves that token out of
     * the KD weights), --docs documents of equal length */
    const int T = o->tokens;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)T), *seg = malloc(sizeof(int32_t) * (size_t)T);
    double *step_s = calloc((size_t)o->steps, sizeof(double));
    if (!ids || !seg || !step_s) {
        fprintf(stderr, "dms bench train: out of memory\n");
        free(ids), free(seg), free(step_s);
        dms_trainer_free(tr);
        dms_model_free(&m);
        dms_backend_close(&be);
        return 1;
    }
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int t = 0; t < T; t++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[t] = (int32_t)(x % (uint64_t)m.cfg.vocab);
        seg[t] = (int32_t)((int64_t)t * o->docs / T);
    }
    const dms_row row = {ids, seg, NULL, 0, 0};
    const double kd_tokens = dms_trainer_row_kd_tokens(tr, &row);
    const dms_step_flops fl = dms_step_flops_of(&m.cfg, seg, T);

    double phase[PHASES] = {0};
    char device[128] = "cpu", cpu[160];
    dms_bench_read_line("/proc/cpuinfo", "model name", cpu, sizeof cpu);
    int rc = 0;
    const int tty = isatty(2);
    for (int s = -1; s < o->steps && rc == 0; s++) { /* s = -1: the warm-up */
        double ph[PHASES] = {0};
        dms_trainer_time_phases(tr, ph);
        dms_step_stats st;
        be.sync(be.ctx);
        const double a = dms_now_s();
        rc = dms_trainer_grads(tr, &row, 1, 400 + s, kd_tokens, 1, &st, &err);
        const double b = dms_now_s();
        if (rc == 0) dms_trainer_apply(tr, 400 + s, &st);
        be.sync(be.ctx);
        const double c = dms_now_s();
        ph[DMS_PHASE_N] = c - b;
        if (rc == 0 && !st.finite) rc = dms_errf(&err, "step %d: the loss or the gradients are not finite", s);
        if (rc == 0 && s >= 0) {
            step_s[s] = c - a;
            for (int k = 0; k < PHASES; k++) phase[k] += ph[k] / o->steps;
        }
        fprintf(stderr, "%s[bench train] %s step %d/%d: %.3f s%s", tty ? "\r" : "", s < 0 ? "warm-up" : "timed",
                s < 0 ? 1 : s + 1, s < 0 ? 1 : o->steps, c - a, tty ? " " : "\n");
    }
    if (tty) fprintf(stderr, "\n");
    dms_trainer_time_phases(tr, NULL);
    const double mem = memory_bytes(&be, device, sizeof device);
    if (rc != 0) {
        fprintf(stderr, "dms bench train: %s\n", err.msg);
    } else {
        qsort(step_s, (size_t)o->steps, sizeof(double), cmp_double);
        const int n = o->steps;
        const double med = n % 2 ? step_s[n / 2] : 0.5 * (step_s[n / 2 - 1] + step_s[n / 2]);
        const double tflops = fl.total / med / 1e12;
        const double peak = o->peak_tflops > 0 ? o->peak_tflops : strcmp(be.name, "cpu") ? known_peak_tflops(device) : 0;
        char date[32], commit[96], path[1200];
        const time_t now = time(NULL);
        strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
        dms_bench_source_revision(commit, sizeof commit);
        cJSON *root = cJSON_CreateObject(), *ph = cJSON_CreateObject(), *fj = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "benchmark", "one DMS training step, random weights at real shapes");
        cJSON_AddStringToObject(root, "date", date);
        cJSON_AddStringToObject(root, "commit", commit);
        cJSON_AddStringToObject(root, "model", o->model);
        cJSON_AddNumberToObject(root, "layers", m.cfg.n_layers);
        cJSON_AddNumberToObject(root, "params", (double)m.n_params);
        cJSON_AddStringToObject(root, "backend", be.name);
        cJSON_AddStringToObject(root, "device", strcmp(be.name, "cpu") ? device : cpu);
        cJSON_AddNumberToObject(root, "tokens", T);
        cJSON_AddNumberToObject(root, "docs", o->docs);
        cJSON_AddNumberToObject(root, "window", o->window);
        cJSON_AddNumberToObject(root, "lora_rank", o->lora_rank);
        cJSON_AddNumberToObject(root, "kd_chunk", cfg.kd_chunk);
        cJSON_AddStringToObject(root, "backward_attention", o->recompute_attention ? "recompute" : "keep");
        cJSON_AddNumberToObject(root, "steps_timed", o->steps);
        cJSON_AddNumberToObject(root, "init_s", t_init);
        cJSON_AddNumberToObject(root, "step_s_median", med);
        cJSON_AddNumberToObject(root, "step_s_min", step_s[0]);
        cJSON_AddNumberToObject(root, "step_s_max", step_s[o->steps - 1]);
        cJSON_AddNumberToObject(root, "tokens_per_s", T / med);
        cJSON_AddNumberToObject(fj, "causal_pairs", fl.pairs);
        cJSON_AddNumberToObject(fj, "linear_pass", fl.linear);
        cJSON_AddNumberToObject(fj, "lm_head_pass", fl.lm_head);
        cJSON_AddNumberToObject(fj, "attention_forward", fl.attention);
        cJSON_AddNumberToObject(fj, "step_total", fl.total);
        cJSON_AddStringToObject(fj, "formula", "3 (linear_pass + lm_head_pass) + 4 attention_forward");
        cJSON_AddItemToObject(root, "model_flops", fj);
        cJSON_AddNumberToObject(root, "achieved_tflops", tflops);
        if (peak > 0) {
            cJSON_AddNumberToObject(root, "peak_tflops", peak);
            cJSON_AddNumberToObject(root, "mfu", tflops / peak);
        }
        cJSON_AddNumberToObject(root, "peak_memory_bytes", mem);
        cJSON_AddStringToObject(root, "peak_memory_source",
                                be.device_info ? "device memory in use after the steps (cudaMemGetInfo, context "
                                                 "included; the trainer's buffers and scratch persist across steps)"
                                               : "process peak resident set (getrusage), model build included");
        for (int k = 0; k < PHASES; k++)
            cJSON_AddNumberToObject(ph, k < DMS_PHASE_N ? dms_phase_name(k) : "optimizer", phase[k]);
        cJSON_AddItemToObject(root, "phase_s_mean", ph);

        printf("%s, %d layers, %d tokens (%d document%s), KD chunks of %d, attention %s in the backward, %s on %s\n",
               o->model, m.cfg.n_layers, T, o->docs, o->docs > 1 ? "s" : "", cfg.kd_chunk,
               o->recompute_attention ? "recomputed" : "kept", be.name, strcmp(be.name, "cpu") ? device : cpu);
        printf("step %.4f s (median of %d; min %.4f, max %.4f), %.1f tokens/s, %.2f TFLOPS of model FLOPs",
               med, o->steps, step_s[0], step_s[o->steps - 1], T / med, tflops);
        if (peak > 0) printf(", MFU %.1f%% of %.1f", 100 * tflops / peak, peak);
        printf("\npeak memory %.2f GiB\nphases (mean s):", mem / (1024.0 * 1024 * 1024));
        for (int k = 0; k < PHASES; k++) printf(" %s %.4f", k < DMS_PHASE_N ? dms_phase_name(k) : "optimizer", phase[k]);
        printf("\n");
        char name[256];
        snprintf(name, sizeof name, "%s", o->model);
        for (size_t n = strlen(name); n > 1 && name[n - 1] == '/'; n--) name[n - 1] = '\0';
        const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
        snprintf(path, sizeof path, "%s/train-%s-%d-%s-%.10s.json", o->out_dir, base, T, be.name, date);
        if (dms_mkdir_p(o->out_dir, &err) != 0 || dms_write_json(path, root, &err) != 0) {
            fprintf(stderr, "dms bench train: %s\n", err.msg);
            rc = -1;
        } else {
            printf("-> %s\n", path);
        }
        cJSON_Delete(root);
    }
    free(step_s);
    free(ids);
    free(seg);
    dms_trainer_free(tr);
    dms_model_free(&m);
    dms_backend_close(&be);
    return rc ? 1 : 0;
}
