/* cmd_inspect.c - `dms inspect`: what a model is before anything runs it:
 * architecture and dimensions, tensor count/shapes/dtypes straight from the
 * weight files (nothing is converted), and the tokenizer and chat format. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/eval_report.h"
#include "core/fs.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model/safetensors.h"

#define MAX_TYPES 16

typedef struct {
    const char *name[MAX_TYPES];
    int count[MAX_TYPES];
    double params[MAX_TYPES];
    int n;
} type_tally;

static void tally(type_tally *t, const char *name, double nelem) {
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->name[i], name)) {
            t->count[i]++;
            t->params[i] += nelem;
            return;
        }
    if (t->n == MAX_TYPES) return;
    t->name[t->n] = name;
    t->count[t->n] = 1;
    t->params[t->n++] = nelem;
}

static int list_tensors(const char *path, int show_all, type_tally *t, dms_err *err) {
    if (dms_is_dir(path)) {
        dms_safetensors st;
        if (dms_st_open_dir(&st, path, err) != 0) return -1;
        for (int i = 0; i < st.n_tensors; i++) {
            const dms_st_tensor *x = &st.tensors[i];
            tally(t, dms_st_dtype_name(x->dtype), (double)dms_st_nelem(x));
            if (show_all) {
                printf("  %-52s %-5s [", x->name, dms_st_dtype_name(x->dtype));
                for (int d = 0; d < x->n_dims; d++) printf("%s%lld", d ? ", " : "", (long long)x->shape[d]);
                printf("]\n");
            }
        }
        printf("tensors:       %d in %d file(s)\n", st.n_tensors, st.n_files);
        dms_st_close(&st);
        return 0;
    }
    dms_gguf g;
    if (dms_gguf_open(&g, path, err) != 0) return -1;
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const dms_gguf_tensor *x = &g.tensors[i];
        tally(t, dms_ggml_type_name(x->type), (double)dms_gguf_tensor_nelem(x));
        if (show_all) {
            printf("  %-52.*s %-5s [", (int)x->name.len, x->name.ptr, dms_ggml_type_name(x->type));
            for (uint32_t d = 0; d < x->n_dims; d++) printf("%s%llu", d ? ", " : "", (unsigned long long)x->ne[d]);
            printf("] (ne)\n");
        }
    }
    printf("tensors:       %llu (GGUF v%u, alignment %llu)\n", (unsigned long long)g.n_tensors, g.version,
           (unsigned long long)g.alignment);
    dms_gguf_close(&g);
    return 0;
}

int dms_cmd_inspect(int argc, char **argv) {
    const char *model_path = NULL, *plan_backend = NULL, *plan_config = NULL;
    int show_tensors = 0, check = 0, plan = 0, plan_tokens = 32768, plan_threads = 0;
    float gpu_gib = 80.0f;
    const dms_arg args[] = {
        {"--model", ARG_STR, &model_path, "PATH", "HF model folder or .gguf file (default: the embedded model)"},
        {"--tensors", ARG_BOOL, &show_tensors, NULL, "list every tensor with dtype and shape"},
        {"--check", ARG_BOOL, &check, NULL, "also load and convert every weight, checking shapes against the config"},
        {"--plan", ARG_BOOL, &plan, NULL,
         "print the memory plan of one training step (config.json is enough: weights are sized, not loaded)"},
        {"--tokens", ARG_INT, &plan_tokens, "N", "--plan: tokens per row (default 32768)"},
        {"--backend", ARG_STR, &plan_backend, "NAME", "--plan: cpu (fp32 weights, default) or cuda (bf16 weights)"},
        {"--config", ARG_STR, &plan_config, "FILE", "--plan: a training config (variant, LoRA, kd_chunk, max_len)"},
        {"--threads", ARG_INT, &plan_threads, "N", "--plan: CPU threads for the attention tiles (default: all cores)"},
        {"--gpu-gib", ARG_FLOAT, &gpu_gib, "G", "--plan: device memory to compare with (default 80)"},
    };
    const dms_cmd_spec spec = {
        .name = "inspect",
        .summary = "dms inspect - show a model (architecture, tensors, dtypes, tokenizer) or plot a training run",
        .usage = "dms inspect [PATH | --model PATH] [--tensors] [--check]\n       dms inspect --plan MODEL [--tokens N] [--backend cuda] [--config FILE]   (memory plan of a training step)\n       dms inspect RUN_DIR      (a training run: writes RUN_DIR/plots/*.png)\n       dms inspect EVAL_DIR     (dms eval results: writes EVAL_DIR/plots/<task>.png)",
        .args = args,
        .n_args = (int)(sizeof args / sizeof args[0]),
        .positional = "PATH",
        .positional_dst = &model_path,
    };
    int pr = dms_args_parse(&spec, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (!model_path) model_path = dms_default_model();
    if (plan) {
        int tokens_given = 0; /* --config's max_len unless --tokens is given */
        for (int i = 1; i < argc; i++) tokens_given |= !strncmp(argv[i], "--tokens", 8);
        return dms_inspect_plan(model_path, tokens_given || !plan_config ? plan_tokens : -1, plan_backend,
                                plan_config, plan_threads, gpu_gib);
    }
    char metrics[PATH_MAX];
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", model_path);
    if (dms_is_file(metrics)) return dms_inspect_run(model_path);
    if (dms_eval_dir_has_results(model_path)) return dms_inspect_eval(model_path);

    dms_err err = {0};
    dms_model m;
    const int flags = DMS_LOAD_TOKENIZER_IF_PRESENT | (check ? DMS_LOAD_WEIGHTS : 0);
    if (dms_model_load(&m, model_path, &dms_cpu_ops, flags, &err) != 0) {
        fprintf(stderr, "dms inspect: %s\n", err.msg);
        return 1;
    }
    const dms_config *c = &m.cfg;
    printf("model:         %s\n", model_path);
    printf("architecture:  %s (%s)\n", dms_arch_name(c->arch), m.from_gguf ? "GGUF" : "Hugging Face safetensors");
    printf("layers:        %d\n", c->n_layers);
    printf("hidden:        %d   intermediate: %d\n", c->hidden, c->intermediate);
    printf("attention:     %d query heads, %d KV heads (GQA %d), head_dim %d%s%s\n", c->n_heads, c->n_kv_heads,
           c->n_heads / c->n_kv_heads, c->head_dim, c->qkv_bias ? ", qkv bias" : "", c->qk_norm ? ", q/k RMSNorm" : "");
    printf("rope:          theta %g%s", c->rope_theta,
           c->rope_kind == DMS_ROPE_LLAMA3 ? ", llama3 scaling" : c->rope_kind == DMS_ROPE_LINEAR ? ", linear scaling" : "");
    if (c->rope_kind != DMS_ROPE_DEFAULT) printf(" x%g", c->rope_factor);
    printf("\ncontext:       %d\nvocab:         %d%s\n", c->max_pos, c->vocab, c->tie_embeddings ? " (tied embeddings)" : "");
    printf("rms_norm_eps:  %g\n", c->rms_eps);
    printf("KV per token:  %d bytes (bf16, all layers)\n", 2 * c->n_layers * c->n_kv_heads * c->head_dim * 2);
    type_tally t = {0};
    if (list_tensors(model_path, show_tensors, &t, &err) != 0) {
        fprintf(stderr, "dms inspect: %s\n", err.msg);
        dms_model_free(&m);
        return 1;
    }
    double total = 0;
    for (int i = 0; i < t.n; i++) total += t.params[i];
    printf("parameters:    %.1f M\ndtypes:       ", total / 1e6);
    for (int i = 0; i < t.n; i++) printf(" %s x%d (%.1f M)", t.name[i], t.count[i], t.params[i] / 1e6);
    printf("\n");
    if (check) printf("weights:       all %zu M parameters loaded and shape-checked (%s)\n", m.n_params / 1000000, m.weight_types);
    if (m.tok) {
        printf("tokenizer:     %s\n", dms_tokenizer_describe(m.tok));
        printf("chat format:   %s\n", dms_chat_kind_name(dms_chat_detect(dms_tokenizer_chat_template(m.tok))));
        int32_t bos = dms_tokenizer_bos(m.tok), eos = dms_tokenizer_eos(m.tok);
        printf("bos / eos:     %d %s / %d %s\n", bos, bos >= 0 ? dms_tokenizer_token_str(m.tok, bos) : "",
               eos, eos >= 0 ? dms_tokenizer_token_str(m.tok, eos) : "");
    } else {
        printf("tokenizer:     none (no tokenizer.json)\n");
    }
    dms_model_free(&m);
    return 0;
}
