/* main.c - the dms binary: subcommand dispatch and top-level help. Each
 * subcommand parses its own flags (cli/args.h) and returns the exit code. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>

#include "cli/commands.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} commands[] = {
    {"prep", dms_cmd_prep, "tokenize JSONL corpora (chat, prompt/response, text) into HDF5 token shards"},
    {"generate", dms_cmd_generate, "generate text from a model (greedy or sampled), with tokens/s and KV statistics"},
    {"train", dms_cmd_train, "retrofit a model with DMS eviction heads (distillation, delayed-eviction masks)"},
    {"export", dms_cmd_export, "write a self-compressing Hugging Face folder (safetensors + dms_* config) from a run"},
    {"eval", dms_cmd_eval, "quality against KV memory under a policy: KL, needle in a haystack, AIME, GPQA"},
    {"bench", dms_cmd_bench, "measurements written to bench/results/ (comm: all-reduce per step; decode --cpu: vs llama.cpp)"},
    {"inspect", dms_cmd_inspect, "show a model (architecture, shapes, dtypes, tokenizer), or plot a training run"},
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

const char *dms_default_model(void) {
    const char *env = getenv("DMS_MODEL");
    return env && *env ? env : DMS_SOURCE_DIR "/models/default.gguf";
}

void dms_set_threads(int n) {
    if (n <= 0) return;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

static void usage(FILE *f) {
    fprintf(f,
            "dms - Dynamic Memory Sparsification retrofitting trainer\n\n"
            "usage: dms COMMAND [options]    (dms COMMAND --help for its options)\n\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nThe default model (when --model is not given) is $DMS_MODEL or\n  %s\n", dms_default_model());
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "dms: unknown command '%s' (see 'dms --help')\n", argv[1]);
    return 2;
}
