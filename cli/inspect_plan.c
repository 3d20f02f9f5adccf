/* inspect_plan.c - `dms inspect --plan MODEL`: the memory plan of one
 * training step on one device (train/train_plan.h), printed part by part
 * and compared with the device's memory. Only the model's config.json is
 * read: the weights are sized, never loaded. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "model/model.h"
#include "train/train_plan.h"

static void line(const char *what, double bytes, const char *note) {
    if (bytes >= 1073741824.0)
        printf("  %-44s %10.2f GiB", what, bytes / 1073741824.0);
    else
        printf("  %-44s %10.1f MiB", what, bytes / 1048576.0);
    printf("%s%s\n", note && *note ? "   " : "", note ? note : "");
}

int dms_inspect_plan(const char *model_path, int tokens, const char *backend, const char *config_path, int threads,
                     double gpu_gib) {
    dms_err err = {0};
    dms_train_config cfg;
    dms_train_config_defaults(&cfg);
    if (config_path && dms_train_config_load(&cfg, config_path, &err) != 0) {
        fprintf(stderr, "dms inspect: %s\n", err.msg);
        return 1;
    }
    if (tokens != -1) cfg.max_len = tokens; /* -1: the config's max_len */
    dms_backend_kind kind = DMS_BACKEND_CPU;
    if (backend && !strcmp(backend, "cuda")) kind = DMS_BACKEND_CUDA;
    else if (backend && strcmp(backend, "cpu") != 0) {
        fprintf(stderr, "dms inspect: --backend must be cpu or cuda (got '%s')\n", backend);
        return 2;
    }
    if (cfg.max_len < 1 || cfg.kd_chunk < 1 || !(gpu_gib > 0)) {
        fprintf(stderr, "dms inspect: --tokens and --gpu-gib must be positive\n");
        return 2;
    }
    dms_model m;
    if (dms_model_load(&m, model_path, &dms_cpu_ops, 0, &err) != 0) {
        fprintf(stderr, "dms inspect: %s\n", err.msg);
        return 1;
    }
    const dms_config c = m.cfg;
    dms_model_free(&m);
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    dms_train_plan p;
    if (dms_train_plan_compute(model_path, &cfg, kind, threads, &p, &err) != 0) {
        fprintf(stderr, "dms inspect: %s\n", err.msg);
        return 1;
    }
    const char *wt = kind == DMS_BACKEND_CUDA ? "bf16" : "fp32";
    char note[160];
    printf("memory plan of one training step: %s (%s, %d layers, d %d, %d/%d heads, ff %d, vocab %d)\n", model_path,
           dms_arch_name(c.arch), c.n_layers, c.hidden, c.n_heads, c.n_kv_heads, c.intermediate, c.vocab);
    printf("  rows of %d tokens, batch 1, backend %s (%s weights), %s heads%s, kd_chunk %d\n", p.tokens,
           dms_backend_kind_name(kind), wt, cfg.variant == DMS_VARIANT_ADAPTER ? "adapter" : "neuron",
           cfg.lora_rank > 0 ? " + LoRA" : "", cfg.kd_chunk < p.tokens ? cfg.kd_chunk : p.tokens);
    line(kind == DMS_BACKEND_CUDA ? "base weights (bf16)" : "base weights (fp32)", p.frozen,
         "frozen: no gradient, no optimizer state");
    snprintf(note, sizeof note, "%.2f M parameters", p.trainable / 4e6);
    line("trainable DMS heads + LoRA (fp32)", p.trainable, note);
    line("their gradients (fp32)", p.grads, "");
    line("Adam moments m, v (fp32)", p.adam, "");
    snprintf(note, sizeof note, "%d x %.3f GiB, each layer's input", p.layers + 1, p.layer_input / 1073741824.0);
    line("activations kept for the backward", p.inputs_kept, note);
    if (p.att_kept > 0)
        line("attention outputs kept for the backward", p.att_kept, "backward_attention keep: not recomputed");
    line("one layer's activations (recomputed)", p.layer_acts, "rebuilt per layer in the backward");
    line("final hidden states (teacher, student)", p.hidden, "the teacher keeps nothing else");
    line("backward scratch", p.backward, "input gradients through frozen layers");
    line("KD chunk logits (student, teacher)", p.kd_chunk, "the [T, vocab] logits never exist at once");
    line("noise, decisions, row buffers, statistics", p.decisions, "");
    if (p.other != 0) line("other trainer memory (not broken down)", p.other, "");
    line(kind == DMS_BACKEND_CUDA ? "op workspace (CUDA scratch)" : "op workspace (attention tiles)", p.workspace,
         kind == DMS_BACKEND_CPU ? "two score tiles per thread" : "");
    const double total_gib = p.total / 1073741824.0;
    printf("  %-44s %10.2f GiB   %s one %.0f GiB device%s\n", "total", total_gib,
           total_gib <= gpu_gib ? "fits" : "does NOT fit", gpu_gib,
           kind == DMS_BACKEND_CUDA ? " (CUDA context and cuBLAS's own workspace not counted; cuBLASLt's is)" : "");
    return 0;
}
