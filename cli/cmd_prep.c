/* cmd_prep.c - `dms prep`: the command-line face of data/prep.h. Turns
 * JSONL corpora into HDF5 token shards with the model's own tokenizer and
 * chat template, ready for `dms train`. --input may be repeated. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "data/prep.h"
#include "data/shards.h"

/* Collects every --input value, walking argv as dms_args_parse does (a
 * flag that takes a value consumes the next word unless written --f=v). */
static int collect_inputs(const dms_cmd_spec *spec, int argc, char **argv, const char **out) {
    int n = 0;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (s[0] != '-' || s[1] != '-') continue;
        const char *eq = strchr(s, '=');
        size_t len = eq ? (size_t)(eq - s) : strlen(s);
        const dms_arg *a = NULL;
        for (int k = 0; k < spec->n_args; k++)
            if (strlen(spec->args[k].name) == len && !strncmp(spec->args[k].name, s, len)) a = &spec->args[k];
        if (!a || a->type == ARG_BOOL) continue;
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (v && !strcmp(a->name, "--input")) out[n++] = v;
    }
    return n;
}

int dms_cmd_prep(int argc, char **argv) {
    dms_prep_opts o;
    dms_prep_opts_default(&o);
    const char *model = NULL, *input = NULL, *output = NULL, *packing = "documents";
    int max_len = o.max_len, mask_prompt = 0, skip_bad = 0, quiet = 0, literal_special = 0, no_thinking = 0;
    uint64_t shard_tokens = (uint64_t)o.shard_tokens, limit = 0;
    const dms_arg args[] = {
        {"--model", ARG_STR, &model, "PATH",
         "HF model folder or .gguf whose tokenizer and chat template to use (default: the embedded model)"},
        {"--input", ARG_STR, &input, "FILE.jsonl", "JSONL corpus, one document per line (required; repeat for more files)"},
        {"--output", ARG_STR, &output, "DIR", "folder for shard-00000.h5 ... and prep.json (required; created)"},
        {"--max-len", ARG_INT, &max_len, "N", "tokens per packed training row; must match the training config (default 2048)"},
        {"--packing", ARG_STR, &packing, "MODE",
         "documents (default: per-document masks and positions; a document cut by a row boundary goes on at its "
         "true positions) or reference (NVIDIA's: every row starts a document, the overflow is dropped, no "
         "document mask); must match the training config's packing"},
        {"--mask-prompt", ARG_BOOL, &mask_prompt, NULL,
         "loss mask 0 on everything up to and including the last assistant header (chat) or the prompt"},
        {"--shard-tokens", ARG_U64, &shard_tokens, "N", "start a new shard after about N tokens (default 50000000)"},
        {"--limit", ARG_U64, &limit, "N", "stop after N documents (default: all)"},
        {"--skip-bad", ARG_BOOL, &skip_bad, NULL, "count and skip bad lines instead of stopping at the first one"},
        {"--literal-special", ARG_BOOL, &literal_special, NULL,
         "keep special-token strings (e.g. <|im_start|>) in \"text\" documents as plain text (default: parsed into "
         "their tokens, as transformers and llama.cpp do)"},
        {"--no-thinking", ARG_BOOL, &no_thinking, NULL,
         "render chats with enable_thinking=false (Qwen3: the generation prompt of --mask-prompt gets the empty "
         "think block)"},
        {"--quiet", ARG_BOOL, &quiet, NULL, "no progress or summary on stderr"},
    };
    const dms_cmd_spec spec = {
        .name = "prep",
        .summary = "dms prep - tokenize JSONL corpora into HDF5 token shards for dms train",
        .usage = "dms prep [--model PATH] --input FILE.jsonl [--input MORE.jsonl] --output DIR [options]",
        .args = args,
        .n_args = (int)(sizeof args / sizeof args[0]),
        .epilog =
            "Each JSONL line is one document, in one of three forms:\n"
            "  {\"messages\": [{\"role\": \"user\", \"content\": \"...\"}, {\"role\": \"assistant\", ...}]}\n"
            "      rendered with the model's chat template (special tokens parsed)\n"
            "  {\"prompt\": \"...\", \"response\": \"...\"}\n"
            "      a user + assistant chat, or prompt + response as plain text if the model has no template\n"
            "  {\"text\": \"...\"}   plain text; EOS is appended; special-token strings in it become their\n"
            "      tokens (--literal-special keeps them as text)\n"
            "BOS is prepended when the tokenizer asks for it. Documents are packed into rows of --max-len\n"
            "tokens: --packing documents puts them back to back (attention never crosses a document);\n"
            "--packing reference starts every row at a document and drops the overflow (no document\n"
            "mask, NVIDIA's recipe). The summary and prep.json give the tokens each packing keeps. A bad line stops\n"
            "prep with FILE:LINE and the problem (or is skipped with --skip-bad). prep.json records the\n"
            "counts and the tokenizer hash; dms train refuses shards made by another tokenizer.\n\n"
            "examples:\n"
            "  dms prep --input data/train.jsonl --output data/shards --max-len 1024\n"
            "  dms prep --model Qwen3-8B/ --input a.jsonl --input b.jsonl --output shards --mask-prompt",
    };
    int pr = dms_args_parse(&spec, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    const char **inputs = calloc((size_t)argc + 1, sizeof(char *));
    if (!inputs) return 1;
    int n_inputs = collect_inputs(&spec, argc, argv, inputs);
    int rc = 0;
    if (n_inputs == 0 || !output) {
        fprintf(stderr, "dms prep: --input and --output are required (see 'dms prep --help')\n");
        rc = 2;
    } else if (max_len <= 0 || max_len > DMS_SHARD_MAX_LEN || shard_tokens == 0 || shard_tokens > INT64_MAX || limit > INT64_MAX) {
        fprintf(stderr, "dms prep: need --max-len 1 to %d and --shard-tokens > 0\n", DMS_SHARD_MAX_LEN);
        rc = 2;
    } else if (dms_packing_from_name(packing, &o.packing) != 0) {
        fprintf(stderr, "dms prep: --packing must be documents or reference (got '%s')\n", packing);
        rc = 2;
    }
    if (rc) {
        free(inputs);
        return rc;
    }
    o.model = model ? model : dms_default_model();
    o.inputs = inputs;
    o.n_inputs = n_inputs;
    o.output = output;
    o.max_len = max_len;
    o.mask_prompt = mask_prompt;
    o.shard_tokens = (int64_t)shard_tokens;
    o.limit = (int64_t)limit;
    o.skip_bad = skip_bad;
    o.literal_special = literal_special;
    o.enable_thinking = no_thinking ? 0 : -1;
    o.progress = !quiet;
    dms_prep_stats st;
    dms_err err = {0};
    if (dms_prep_run(&o, &st, &err) != 0) {
        fprintf(stderr, "dms prep: %s\n", err.msg);
        free(inputs);
        return 1;
    }
    if (!quiet) {
        fprintf(stderr,
                "[prep] %" PRId64 " documents, %" PRId64 " tokens -> %" PRId64 " rows of %d in %" PRId64
                " shard(s) in %s, packing %s (tokens kept: documents %" PRId64 ", reference %" PRId64
                "; %" PRId64 " bad lines skipped, tokenizer 0x%016" PRIx64 ", %.1f s)\n",
                st.documents, st.tokens, st.rows, max_len, st.shards, output, dms_packing_name(o.packing),
                st.kept[DMS_PACK_DOCUMENTS], st.kept[DMS_PACK_REFERENCE], st.skipped, st.tokenizer_hash,
                st.seconds);
        if (st.rows == 0)
            fprintf(stderr, "[prep] warning: fewer than --max-len %d tokens per shard: no full training row\n",
                    max_len);
    }
    free(inputs);
    return 0;
}
