/* cmd_eval.c - `dms eval`: parse the flags of an evaluation, open the
 * backend, hand the run to the library (runtime/eval.h: dms_eval_run) and
 * print its one-line result; `dms eval --summary DIR` prints the table of
 * every result in a folder (cli/eval_summary.c). Bad input ends with one
 * line on stderr and exit code 2 (flags) or 1 (files, models). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/eval_report.h"
#include "kernels/dtype.h"
#include "kernels/registry.h"
#include "runtime/eval.h"

/* "256,512,1024" into v (at most DMS_EVAL_MAX_LIST). */
static int parse_list(const char *flag, const char *s, int *v, int *n) {
    *n = 0;
    for (const char *p = s; *p;) {
        char *end;
        const long x = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || *n == DMS_EVAL_MAX_LIST || x < 0 || x > 100000000) {
            fprintf(stderr, "dms eval: %s expects comma-separated non-negative integers (at most %d), got '%s'\n",
                    flag, DMS_EVAL_MAX_LIST, s);
            return -1;
        }
        v[(*n)++] = (int)x;
        p = *end ? end + 1 : end;
    }
    if (*n == 0) {
        fprintf(stderr, "dms eval: %s is empty\n", flag);
        return -1;
    }
    return 0;
}

static const char epilog[] =
    "tasks:\n"
    "  kl    mean per-token KL(vanilla || policy) in nats and perplexity on held-out text (plain text, or JSONL\n"
    "        with \"text\"), teacher-forced over windows of --window-tokens tokens\n"
    "  niah  needle-in-a-haystack retrieval over --lengths and --depths (synthetic, greedy)\n"
    "  aime  JSONL with \"problem\" and \"answer\": pass@1 over --samples sampled answers (last \\boxed{})\n"
    "  gpqa  JSONL with GPQA's fields (Question, Correct Answer, Incorrect Answer 1..3): accuracy\n"
    "\nexamples:\n"
    "  dms eval --task kl --model dms_model/ --data heldout.txt --policy dms --tag dms\n"
    "  dms eval --task kl --model dms_model/ --data heldout.txt --policy window \\\n"
    "      --match runs/eval/kl-dms-dms.json          # the budget DMS really held\n"
    "  dms eval --task kl --model models/default.gguf --data /usr/share/common-licenses/GPL-3 \\\n"
    "      --policy tova --budget 128 --windows 4\n"
    "  dms eval --task niah --model Qwen3-8B-dms/ --policy dms --lengths 1024,4096 --samples 8\n"
    "  dms eval --task aime --model Qwen3-8B-dms/ --data aime2025.jsonl --policy dms --samples 8 --batch 8\n"
    "  dms eval --task gpqa --model Qwen3-8B/ --data gpqa_diamond.jsonl --policy h2o --cr 4\n"
    "  dms eval --summary runs/eval                   # one table of every result\n"
    "  dms inspect runs/eval                          # KL / accuracy against KV CR, PNG\n"
    "\nOutput: --out DIR/<task>-<policy>-<tag>.json (config, metric +- standard error, KV statistics, items)\n"
    "and .jsonl (one line per finished item; a rerun skips the items it holds). Details: docs/eval.md";

int dms_cmd_eval(int argc, char **argv) {
    dms_eval_config c;
    dms_eval_config_default(&c);
    const char *task = NULL, *policy = NULL, *lengths = NULL, *depths = NULL, *summary = NULL;
    const char *backend = "cpu", *kv_dtype = "f32";
    int threads = 0;
    const dms_arg args[] = {
        {"--task", ARG_STR, &task, "T", "kl, niah, aime or gpqa (required)"},
        {"--model", ARG_STR, &c.model, "PATH", "HF model folder or .gguf file (default: the embedded model)"},
        {"--data", ARG_STR, &c.data, "FILE", "kl: text file or JSONL with \"text\"; aime, gpqa: JSONL"},
        {"--policy", ARG_STR, &policy, "P", "KV policy: dms, full, window, sinks, tova, h2o (required)"},
        {"--budget", ARG_INT, &c.kv.budget, "N", "tokens kept per (layer, KV head) by window/sinks/tova/h2o"},
        {"--cr", ARG_FLOAT, &c.cr, "X",
         "budget from a KV CR >= 1: kl T/X; niah (length + max tokens)/X; aime, gpqa (longest prompt + max tokens)/X"},
        {"--match", ARG_STR, &c.match, "RESULT.json",
         "kl: the budget whose time-averaged live tokens equal this DMS kl result's"},
        {"--by-lane", ARG_BOOL, &c.by_lane, NULL,
         "with --match: a budget per (layer, KV head) in the proportions of the DMS result's live tokens per lane "
         "(its allocation, the policy's choice of tokens)"},
        {"--reference", ARG_STR, &c.reference, "PATH",
         "kl: the vanilla model (e.g. the base of a DMS model; default: the model under policy full)"},
        {"--window-tokens", ARG_INT, &c.window_tokens, "N", "kl: tokens per window, >= 512 (default 512)"},
        {"--windows", ARG_INT, &c.windows, "N", "kl: windows at most (default: every full window of the text)"},
        {"--chunk", ARG_INT, &c.chunk, "N", "kl: tokens per forward call (default 32; 1: live tokens exact per token)"},
        {"--lengths", ARG_STR, &lengths, "L,L,..",
         "niah: prompt lengths in tokens (default 256,512,1024,2048; capped by the context)"},
        {"--depths", ARG_STR, &depths, "D,D,..", "niah: needle depths in % (default 0,25,50,75,100)"},
        {"--samples", ARG_INT, &c.samples, "N", "samples per problem / question / niah cell (default 4; gpqa 1)"},
        {"--max-tokens", ARG_INT, &c.max_tokens, "N", "new tokens at most (default 32000; niah 24)"},
        {"--temperature", ARG_FLOAT, &c.sampling.temperature, "T", "sampling temperature (default 0.6; niah 0 = greedy)"},
        {"--top-p", ARG_FLOAT, &c.sampling.top_p, "P", "nucleus mass (default 0.95; niah 1)"},
        {"--top-k", ARG_INT, &c.sampling.top_k, "K", "top-k (default 20; niah off)"},
        {"--min-p", ARG_FLOAT, &c.sampling.min_p, "P", "min-p (default 0 = off)"},
        {"--seed", ARG_U64, &c.seed, "S", "seed of samples, haystacks and GPQA shuffles (default 1234)"},
        {"--batch", ARG_INT, &c.batch, "N", "sequences decoded together (default 4)"},
        {"--limit", ARG_INT, &c.limit, "N", "stop after N more items (the rest on a rerun)"},
        {"--out", ARG_STR, &c.out_dir, "DIR", "result folder (default runs/eval)"},
        {"--tag", ARG_STR, &c.tag, "NAME", "file name tag (default: model name and budget, e.g. default-b128)"},
        {"--sinks", ARG_INT, &c.kv.sinks, "N", "sinks policy: first tokens always kept (default 4)"},
        {"--dms-offset", ARG_FLOAT, &c.kv.dms_offset, "X",
         "dms: the decisions' logit offset (default: the model's dms_initial_alpha_offset, 5); a token is "
         "evicted where its scaled logit exceeds X, so a higher X keeps more tokens (one model, several KV CRs)"},
        {"--block-size", ARG_INT, &c.kv.block_size, "N", "tokens per KV block (default: the model's, else 16)"},
        {"--prefill-chunk", ARG_INT, &c.kv.max_chunk, "N", "aime, gpqa, niah: prompt tokens per forward call (256)"},
        {"--kv-dtype", ARG_STR, &kv_dtype, "T",
         "the policy's KV cache rows: f32, f16 or bf16 (default f32; kl's vanilla reference stays f32)"},
        {"--backend", ARG_STR, &backend, "NAME", "cpu or cuda (default cpu)"},
        {"--threads", ARG_INT, &threads, "N", "CPU threads (default: all cores)"},
        {"--quiet", ARG_BOOL, &c.quiet, NULL, "no progress bar"},
        {"--summary", ARG_STR, &summary, "DIR", "print the table of every result in DIR and exit"},
    };
    const dms_cmd_spec spec = {
        .name = "eval",
        .summary = "dms eval - quality against KV memory: KL, needle in a haystack, AIME, GPQA under a KV policy",
        .usage = "dms eval --task T [--model PATH] [--data FILE] --policy P [--budget N | --cr X | --match R.json]\n"
                 "       dms eval --summary DIR",
        .args = args,
        .n_args = (int)(sizeof args / sizeof args[0]),
        .epilog = epilog,
    };
    int pr = dms_args_parse(&spec, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (summary) return dms_eval_summary(summary);
    if (!task) {
        fprintf(stderr, "dms eval: --task is required (kl, niah, aime, gpqa; see 'dms eval --help')\n");
        return 2;
    }
    if (dms_eval_task_from_name(task) < 0) {
        fprintf(stderr, "dms eval: unknown task '%s' (kl, niah, aime, gpqa)\n", task);
        return 2;
    }
    c.task = (dms_eval_task)dms_eval_task_from_name(task);
    if (!policy) {
        fprintf(stderr, "dms eval: --policy is required (dms, full, window, sinks, tova, h2o)\n");
        return 2;
    }
    if (dms_policy_from_name(policy) < 0) {
        fprintf(stderr, "dms eval: unknown policy '%s' (dms, full, window, sinks, tova, h2o)\n", policy);
        return 2;
    }
    c.kv.policy = (dms_policy)dms_policy_from_name(policy);
    if ((lengths && parse_list("--lengths", lengths, c.lengths, &c.n_lengths)) ||
        (depths && parse_list("--depths", depths, c.depths, &c.n_depths)))
        return 2;
    if (dms_kv_dtype_from_name(kv_dtype) < 0) {
        fprintf(stderr, "dms eval: unknown --kv-dtype '%s' (f32, f16, bf16)\n", kv_dtype);
        return 2;
    }
    c.kv.kv_dtype = (dms_dtype)dms_kv_dtype_from_name(kv_dtype);
    if (c.kv.sinks < 0 || c.kv.block_size < 0 || c.kv.max_chunk < 1) {
        fprintf(stderr, "dms eval: need --sinks, --block-size >= 0 and --prefill-chunk >= 1\n");
        return 2;
    }
    if (!c.model) c.model = dms_default_model();
    c.backend_name = backend;
    dms_err err = {0};
    if (dms_eval_config_finish(&c, &err) != 0) {
        fprintf(stderr, "dms eval: %s\n", err.msg);
        return 2;
    }
    dms_set_threads(threads);
    dms_backend be;
    if (dms_backend_open(&be, backend, 0, &err) != 0) {
        fprintf(stderr, "dms eval: %s\n", err.msg);
        return 2;
    }
    dms_eval_outcome out;
    const int rc = dms_eval_run(&c, &be, &out, &err);
    if (rc != 0) fprintf(stderr, "dms eval: %s\n", err.msg);
    if (out.result) {
        if (rc == 0) dms_eval_print_result(out.result, stdout);
        printf("%s %s (%d of %d items; %d now, %d from before)\n", out.complete ? "written" : "partial:",
               out.json_path, out.items_new + out.items_skipped, out.items, out.items_new, out.items_skipped);
        cJSON_Delete(out.result);
    }
    dms_backend_close(&be);
    return rc == 0 ? 0 : 1;
}
