/* cmd_bench.c - `dms bench TARGET`: measurements, not tests. Targets:
 *   comm   - bytes all-reduced per training step for a model's trainable set
 *            (adapter, neuron, LoRA r) against the bytes a full fine-tune
 *            would reduce (the peer, in the same run), and the time of those
 *            all-reduces over the job's ranks (mpirun -np 2 on the CPU).
 *   decode - (--cpu) greedy decode and prefill speed, vanilla and DMS,
 *            against llama.cpp on the same GGUF (cli/bench_decode.c).
 *   train  - one DMS training step at a model's real shapes with random
 *            weights, CPU or GPU: time, MFU, memory, phases (cli/bench_train.c).
 *   attention - the training DMS attention alone, forward and backward,
 *            through the op table (cli/bench_attention.c).
 * Results go to bench/results/<target>-...-<date>.json. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/bench_attention.h"
#include "cli/bench_decode.h"
#include "cli/bench_train.h"
#include "cli/commands.h"
#include "core/fs.h"
#include "model/model.h"
#include "runtime/kv_paged.h"
#include "train/comm.h"
#include "train/progress.h"

/* Trainable floats per step for each set; base = every weight of the model. */
static double count_adapter(const dms_config *c) { return (double)c->n_layers * ((double)c->n_kv_heads * c->hidden + c->hidden); }
static double count_neuron(const dms_config *c) { return (double)c->n_layers * c->n_kv_heads * c->hidden; }
static double count_lora(const dms_config *c, int r) {
    const double d = c->hidden, q = (double)c->n_heads * c->head_dim, kv = (double)c->n_kv_heads * c->head_dim;
    return (double)c->n_layers * r * ((d + q) + (d + kv) + (d + kv) + (q + d));
}
static double count_base(const dms_config *c) {
    const double d = c->hidden, q = (double)c->n_heads * c->head_dim, kv = (double)c->n_kv_heads * c->head_dim;
    const double layer = d * q * 2 + d * kv * 2 + 3.0 * d * c->intermediate + 2 * d + (c->qk_norm ? 2.0 * c->head_dim : 0);
    return c->n_layers * layer + (double)c->vocab * d * (c->tie_embeddings ? 1 : 2) + d;
}

/* Median seconds of `iters` all-reduces of n floats (after 2 warm-ups). */
static double time_allreduce(dms_comm *comm, size_t n, int iters, dms_err *err) {
    float *buf = calloc(n ? n : 1, sizeof(float));
    double *t = calloc((size_t)iters, sizeof(double));
    int rc = 0;
    for (int i = -2; i < iters && rc == 0; i++) {
        comm->barrier(comm);
        double t0 = dms_now_s();
        rc = comm->allreduce_f32(comm, buf, n, err);
        if (i >= 0) t[i] = dms_now_s() - t0;
    }
    for (int i = 0; i < iters; i++) /* insertion sort: iters is small */
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double x = t[j];
            t[j] = t[j - 1];
            t[j - 1] = x;
        }
    double med = rc == 0 ? t[iters / 2] : -1;
    free(buf);
    free(t);
    return med;
}

static int bench_comm(dms_comm *comm, const char *model_path, int lora_rank, int iters, const char *out_dir) {
    dms_err err = {0};
    dms_model m;
    if (dms_model_load(&m, model_path, &dms_cpu_ops, 0, &err) != 0) {
        fprintf(stderr, "dms bench: %s\n", err.msg);
        return 1;
    }
    const dms_config *c = &m.cfg;
    struct { const char *set; double floats; } sets[4] = {
        {"adapter", count_adapter(c)}, {"neuron", count_neuron(c)}, {"lora", count_lora(c, lora_rank)},
        {"full fine-tune (peer)", count_base(c)}};
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "sets");
    char date[32];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    cJSON_AddStringToObject(root, "benchmark", "gradient all-reduce per training step");
    cJSON_AddStringToObject(root, "date", date);
    cJSON_AddStringToObject(root, "model", model_path);
    cJSON_AddStringToObject(root, "arch", dms_arch_name(c->arch));
    cJSON_AddStringToObject(root, "comm", comm->kind);
    cJSON_AddNumberToObject(root, "ranks", comm->size);
    cJSON_AddNumberToObject(root, "lora_rank", lora_rank);
    cJSON_AddNumberToObject(root, "iters", iters);
    if (comm->rank == 0)
        printf("%-24s %14s %14s %12s %12s\n", "trainable set", "bytes/step", "x full model", "time (ms)", "GB/s");
    int rc = 0;
    for (int i = 0; i < 4 && rc == 0; i++) {
        const double bytes = sets[i].floats * 4.0;
        double secs = -1;
        /* buffers past 2 GiB per rank are reported, not timed (memory) */
        if (comm->size > 1 && bytes <= 2147483648.0) {
            secs = time_allreduce(comm, (size_t)sets[i].floats, iters, &err);
            if (secs < 0) {
                fprintf(stderr, "dms bench: %s\n", err.msg);
                rc = 1;
            }
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "set", sets[i].set);
        cJSON_AddNumberToObject(o, "bytes", bytes);
        cJSON_AddNumberToObject(o, "ratio_to_full_model", bytes / (sets[3].floats * 4.0));
        if (secs >= 0) {
            cJSON_AddNumberToObject(o, "allreduce_ms", secs * 1e3);
            cJSON_AddNumberToObject(o, "algbw_GBps", bytes / secs / 1e9);
        }
        cJSON_AddItemToArray(arr, o);
        if (comm->rank == 0) {
            char ms[32] = "-", bw[32] = "-";
            if (secs >= 0) {
                snprintf(ms, sizeof ms, "%.3f", secs * 1e3);
                snprintf(bw, sizeof bw, "%.2f", bytes / secs / 1e9);
            }
            printf("%-24s %14.0f %14.2e %12s %12s\n", sets[i].set, bytes, bytes / (sets[3].floats * 4.0), ms, bw);
        }
    }
    if (comm->size == 1 && comm->rank == 0)
        printf("(one process: run under 'mpirun -np 2 dms bench comm' for all-reduce times)\n");
    if (rc == 0 && comm->rank == 0 && out_dir) {
        char host[64] = "host", path[1024];
        gethostname(host, sizeof host - 1);
        const char *base = strrchr(model_path, '/');
        base = base && base[1] ? base + 1 : model_path;
        snprintf(path, sizeof path, "%s/comm-%s-%s-%dranks-%.10s.json", out_dir, base, host, comm->size, date);
        if (dms_mkdir_p(out_dir, &err) != 0 || dms_write_json(path, root, &err) != 0) {
            fprintf(stderr, "dms bench: %s\n", err.msg);
            rc = 1;
        } else {
            printf("-> %s\n", path);
        }
    }
    cJSON_Delete(root);
    dms_model_free(&m);
    return rc;
}

int dms_cmd_bench(int argc, char **argv) {
    const char *model = NULL, *out = DMS_SOURCE_DIR "/bench/results", *target = NULL, *kv_dtype = "f16";
    int lora_rank = -1, iters = 20, cpu = 0; /* -1: the target's default */
    const char *shape = NULL, *backend = "cpu";
    float peak = 0;
    dms_bench_attention_opts at = {NULL, NULL, 0, 1, 32, 8, 128, 256, 10};
    dms_bench_train_opts tr = {NULL, "cpu", NULL, 0, 1, INT_MIN, 0, 256, 0, 0, 0, 0}; /* steps INT_MIN: the target's default */
    dms_bench_decode_opts dec = {NULL, NULL, NULL, "128,2048,8192", "/usr/share/common-licenses/GPL-3", NULL, NULL,
                                 -1, 0, DMS_F16}; /* tokens -1: the target's default */
    dec.python = getenv("DMS_PYTHON") && *getenv("DMS_PYTHON") ? getenv("DMS_PYTHON") : "python3";
    const dms_arg args[] = {
        {"--model", ARG_STR, &model, "PATH", "model folder, .gguf or config-only folder (default: the embedded model)"},
        {"--shape", ARG_STR, &shape, "NAME", "train: the model of bench/models/NAME (qwen3-8b, qwen3-1.7b, llama3.1-8b, ...)"},
        {"--backend", ARG_STR, &backend, "NAME", "train, attention: cpu or cuda (default cpu)"},
        {"--steps", ARG_INT, &tr.steps, "N", "train: timed steps after one warm-up; the median is reported (default 3; attention 10)"},
        {"--docs", ARG_INT, &tr.docs, "N", "train, attention: documents of equal length packed in the row (default 1)"},
        {"--layers", ARG_INT, &tr.layers, "N", "train: only the first N layers (default: all)"},
        {"--window", ARG_INT, &tr.window, "W", "train, attention: DMS eviction window (default 256)"},
        {"--kd-chunk", ARG_INT, &tr.kd_chunk, "N", "train: tokens per KD chunk through the LM head (default 128 on cpu, 1024 on cuda)"},
        {"--recompute-attention", ARG_BOOL, &tr.recompute_attention, NULL, "train: run the attention forward again in the backward (backward_attention recompute) instead of keeping its output"},
        {"--peak-tflops", ARG_FLOAT, &peak, "X", "train: the device's dense bf16 peak for MFU (default: from the GPU's name)"},
        {"--heads", ARG_INT, &at.heads, "H", "attention: query heads (default 32, Qwen3-8B's)"},
        {"--kv-heads", ARG_INT, &at.kv_heads, "KV", "attention: KV heads (default 8)"},
        {"--head-dim", ARG_INT, &at.head_dim, "D", "attention: head dimension (default 128)"},
        {"--lora-rank", ARG_INT, &lora_rank, "R", "comm: LoRA rank for the lora set (default 16); train: LoRA beside the heads (default 0)"},
        {"--iters", ARG_INT, &iters, "N", "comm: timed repetitions; the median is reported (default 20)"},
        {"--out", ARG_STR, &out, "DIR", "results folder (default bench/results)"},
        {"--cpu", ARG_BOOL, &cpu, NULL, "decode: on the CPU (the only device it times)"},
        {"--dms4", ARG_STR, &dec.dms4, "DIR", "decode: a DMS export (adapter variant) of a run on --model, timed at ~4x"},
        {"--dms8", ARG_STR, &dec.dms8, "DIR", "decode: the same at ~8x (the JSON records each one's measured KV CR)"},
        {"--contexts", ARG_STR, &dec.contexts, "C,C,..", "decode: context lengths (default 128,2048,8192; 2K, 8K allowed)"},
        {"--tokens", ARG_INT, &dec.tokens, "N", "decode: new tokens per run, the last at context - 1 (default 64); train: tokens per step (default 4096); attention: tokens (default 32768)"},
        {"--threads", ARG_INT, &dec.threads, "N", "decode: threads for both runtimes; train: CPU threads (default: all cores)"},
        {"--kv-dtype", ARG_STR, &kv_dtype, "T", "decode: our KV cache rows, f32, f16 or bf16 (default f16, as llama.cpp's)"},
        {"--text", ARG_STR, &dec.text, "FILE", "decode: prompt text, repeated to length (default the GPL-3 text)"},
        {"--python", ARG_STR, &dec.python, "PY", "decode: python with llama-cpp-python (default $DMS_PYTHON or python3)"},
    };
    const dms_cmd_spec spec = {
        .name = "bench",
        .summary = "dms bench - measurements (not tests), written to bench/results/",
        .usage = "dms bench comm [--model PATH] [--lora-rank R] [--iters N]\n"
                 "       mpirun -np 2 dms bench comm ...   (times the all-reduces)\n"
                 "       dms bench decode --cpu [--model GGUF] [--dms4 DIR] [--dms8 DIR] [--contexts 128,2K,8K]\n"
                 "                        [--tokens N] [--threads N] [--kv-dtype f16] [--python PY]\n"
                 "       dms bench train [--shape NAME | --model PATH] [--tokens N] [--backend cpu|cuda] [--steps N]\n"
                 "                       [--docs N] [--layers N] [--window W] [--lora-rank R] [--kd-chunk N]\n"
                 "                       [--peak-tflops X] [--recompute-attention]\n"
                 "       dms bench attention [--backend cpu|cuda] [--tokens N] [--docs N] [--heads H] [--kv-heads KV]\n"
                 "                           [--head-dim D] [--window W] [--steps N]",
        .args = args,
        .n_args = (int)(sizeof args / sizeof args[0]),
        .positional = "TARGET",
        .positional_dst = &target,
        .epilog = "targets:\n  comm   gradient bytes all-reduced per step (adapter, neuron, LoRA r vs a full\n"
                  "         fine-tune) and the time of those all-reduces over the job's ranks\n"
                  "  decode greedy decode and prefill tokens/s on the CPU: ours vanilla and with DMS (exports whose\n"
                  "         base weights are swapped for the GGUF's blocks) against llama.cpp (llama-cpp-python:\n"
                  "         pip install llama-cpp-python) on the same GGUF, prompt ids, threads and tokens, at each\n"
                  "         context; docs/runtime.md\n"
                  "  train  one DMS training step at a model's real shapes with random weights: step time,\n"
                  "         tokens/s, model FLOPs and MFU, peak memory, time per phase; docs/training.md\n"
                  "  attention  the training DMS attention alone (forward, backward with the decision-logit\n"
                  "         gradient) on random inputs through the op table; its peer: bench/sdpa_peer.py\n\n"
                  "examples:\n"
                  "  dms bench train --shape qwen3-8b --tokens 32768 --backend cuda\n"
                  "  dms bench train --shape qwen3-0.6b --layers 2 --tokens 1024   # the CPU, a slice of the model\n"
                  "  dms bench attention --backend cuda --tokens 32768             # Qwen3-8B's attention shape",
    };
    int pr = dms_args_parse(&spec, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (target && !strcmp(target, "train")) {
        char path[512];
        if (shape && model) {
            fprintf(stderr, "dms bench train: give --shape or --model, not both\n");
            return 2;
        }
        if (shape) { /* qwen3-8b -> bench/models/qwen3_8b, under the working directory, else the source tree's */
            for (int k = 0; k < 2; k++) {
                snprintf(path, sizeof path, "%s%sbench/models/%s", k ? DMS_SOURCE_DIR : "", k ? "/" : "", shape);
                for (char *c = path + strlen(path) - strlen(shape); *c; c++) *c = *c == '-' ? '_' : *c;
                if (dms_is_dir(path)) break;
            }
            if (!dms_is_dir(path)) {
                fprintf(stderr, "dms bench train: --shape %s: no %s (the shapes: the folders of bench/models)\n", shape,
                        path);
                return 2;
            }
            model = path;
        }
        if (dec.threads < 0) {
            fprintf(stderr, "dms bench train: --threads must be >= 0\n");
            return 2;
        }
        dms_set_threads(dec.threads);
        tr.model = model ? model : dms_default_model();
        tr.backend = backend;
        tr.out_dir = out;
        tr.tokens = dec.tokens < 0 ? 4096 : dec.tokens;
        tr.lora_rank = lora_rank < 0 ? 0 : lora_rank;
        tr.peak_tflops = peak;
        if (tr.steps == INT_MIN) tr.steps = 3;
        return dms_bench_train(&tr);
    }
    if (target && !strcmp(target, "attention")) {
        if (dec.threads < 0) {
            fprintf(stderr, "dms bench attention: --threads must be >= 0\n");
            return 2;
        }
        dms_set_threads(dec.threads);
        at.backend = backend;
        at.out_dir = out;
        at.tokens = dec.tokens < 0 ? 32768 : dec.tokens;
        at.docs = tr.docs;
        at.window = tr.window;
        at.steps = tr.steps == INT_MIN ? 10 : tr.steps;
        return dms_bench_attention(&at);
    }
    if (dec.tokens < 0) dec.tokens = 64;
    if (lora_rank < 0) lora_rank = 16;
    if (target && !strcmp(target, "decode")) {
        if (!cpu) {
            fprintf(stderr, "dms bench decode: only --cpu is measured (dms bench decode --cpu)\n");
            return 2;
        }
        if (dms_kv_dtype_from_name(kv_dtype) < 0 || dec.tokens < 2 || dec.threads < 0) {
            fprintf(stderr, "dms bench decode: need --kv-dtype f32|f16|bf16, --tokens >= 2, --threads >= 0\n");
            return 2;
        }
        dec.kv_dtype = (dms_dtype)dms_kv_dtype_from_name(kv_dtype);
        if (dec.threads == 0) dec.threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
        dec.model = model ? model : dms_default_model();
        dec.out_dir = out;
        return dms_bench_decode(&dec);
    }
    if (!target || strcmp(target, "comm") != 0) {
        fprintf(stderr, "dms bench: unknown or missing target '%s' (targets: attention, comm, decode, train)\n", target ? target : "");
        return 2;
    }
    if (lora_rank <= 0 || iters <= 0) {
        fprintf(stderr, "dms bench: --lora-rank and --iters must be positive\n");
        return 2;
    }
    dms_err err = {0};
    dms_comm comm;
    if (dms_comm_auto(&comm, NULL, NULL, &err) != 0) {
        fprintf(stderr, "dms bench: %s\n", err.msg);
        return 1;
    }
    int rc = bench_comm(&comm, model ? model : dms_default_model(), lora_rank, iters, out);
    if (rc && comm.size > 1) comm.abort(&comm, rc);
    comm.finalize(&comm);
    return rc;
}
