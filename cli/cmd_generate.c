/* cmd_generate.c - `dms generate`: load a model, render the prompt with the
 * model's chat template (unless --raw), stream the continuation to stdout,
 * and report prefill/decode speed and KV cache use on stderr (and as JSON
 * with --stats-json, which the benchmarks read). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/args.h"
#include "cli/bench_decode.h"
#include "cli/commands.h"
#include "core/fs.h"
#include "kernels/dtype.h"
#include "kernels/registry.h"
#include "model/model.h"
#include "runtime/generate.h"

typedef struct {
    const dms_tokenizer *tok;
    int quiet;
} stream_ctx;

static int stream_token(int32_t id, void *p) {
    stream_ctx *c = p;
    if (c->quiet || dms_tokenizer_is_special(c->tok, id)) return 0;
    size_t len;
    const char *b = dms_tokenizer_token_bytes(c->tok, id, &len);
    fwrite(b, 1, len, stdout);
    fflush(stdout);
    return 0;
}

void dms_gen_timing_json(cJSON *o, const dms_gen_stats *s) {
    cJSON_AddNumberToObject(o, "prompt_tokens", s->prompt_tokens);
    cJSON_AddNumberToObject(o, "new_tokens", s->new_tokens);
    cJSON_AddNumberToObject(o, "decode_steps", s->decode_steps);
    cJSON_AddNumberToObject(o, "prefill_s", s->prefill_s);
    cJSON_AddNumberToObject(o, "decode_s", s->decode_s);
    cJSON_AddNumberToObject(o, "prefill_tok_s", s->prefill_s > 0 ? s->prompt_tokens / s->prefill_s : 0);
    cJSON_AddNumberToObject(o, "decode_tok_s", s->decode_s > 0 ? s->decode_steps / s->decode_s : 0);
}

static int write_stats_json(const char *path, const dms_model *m, const dms_gen_params *p,
                            const dms_gen_stats *s, int threads, int dequant) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", m->path);
    cJSON_AddStringToObject(o, "arch", dms_arch_name(m->cfg.arch));
    cJSON_AddStringToObject(o, "weight_types", m->weight_types);
    cJSON_AddBoolToObject(o, "dequant", dequant); /* weights converted at load (--dequant) or kept as stored */
    cJSON_AddNumberToObject(o, "threads", threads);
    cJSON_AddNumberToObject(o, "temperature", p->temperature);
    dms_gen_timing_json(o, s);
    cJSON_AddStringToObject(o, "policy", dms_policy_name(p->kv.policy));
    cJSON_AddNumberToObject(o, "budget", p->kv.budget);
    if (!isnan(p->kv.dms_offset)) cJSON_AddNumberToObject(o, "dms_offset", p->kv.dms_offset);
    cJSON_AddNumberToObject(o, "block_size", s->kv_block_size);
    cJSON_AddStringToObject(o, "kv_dtype", dms_dtype_name(p->kv.kv_dtype));
    cJSON_AddNumberToObject(o, "kv_tokens_seen", (double)s->kv.seen);
    cJSON_AddNumberToObject(o, "kv_held_mean", s->kv.held_mean);
    cJSON_AddNumberToObject(o, "kv_held_time_mean", s->kv.held_time_mean);
    cJSON_AddNumberToObject(o, "kv_held_peak", s->kv.held_peak);
    cJSON_AddNumberToObject(o, "kv_cr", s->kv.kv_cr);
    cJSON_AddNumberToObject(o, "decision_cr", s->kv.decision_cr);
    cJSON_AddNumberToObject(o, "kv_bytes_held", (double)s->kv.bytes_held);
    cJSON_AddNumberToObject(o, "kv_bytes_vanilla", (double)s->kv.bytes_vanilla);
    cJSON_AddNumberToObject(o, "kv_blocks_peak", s->kv_blocks_peak);
    dms_err err = {{0}};
    const int rc = dms_write_json(path, o, &err);
    cJSON_Delete(o);
    if (rc) fprintf(stderr, "dms generate: stats: %s\n", err.msg);
    return rc;
}

int dms_cmd_generate(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL, *system = NULL, *stats_json = NULL, *backend = "cpu";
    const char *policy = NULL, *kv_dtype = "f32", *base_path = NULL;
    float cr = 0;
    int raw = 0, threads = 0, quiet = 0, no_stop = 0, no_thinking = 0, dequant = 0;
    dms_gen_params gp;
    dms_gen_params_default(&gp);
    const dms_arg args[] = {
        {"--model", ARG_STR, &model_path, "PATH", "HF model folder or .gguf file (default: the embedded model)"},
        {"--prompt", ARG_STR, &prompt, "TEXT", "the user message (required)"},
        {"--system", ARG_STR, &system, "TEXT", "system message for the chat template"},
        {"--raw", ARG_BOOL, &raw, NULL, "feed the prompt as is, without the chat template"},
        {"--no-thinking", ARG_BOOL, &no_thinking, NULL,
         "render the chat template with enable_thinking=false (Qwen3: an empty think block, the model answers "
         "directly)"},
        {"--max-tokens", ARG_INT, &gp.max_new_tokens, "N", "tokens to generate at most (default 128)"},
        {"--temperature", ARG_FLOAT, &gp.temperature, "T", "sampling temperature; 0 = greedy (default 0)"},
        {"--top-k", ARG_INT, &gp.top_k, "K", "sample among the K most likely tokens (default off)"},
        {"--top-p", ARG_FLOAT, &gp.top_p, "P", "nucleus sampling mass (default 1 = off)"},
        {"--seed", ARG_U64, &gp.seed, "S", "sampling seed (default 1234)"},
        {"--ignore-eos", ARG_BOOL, &no_stop, NULL, "keep generating past end-of-turn tokens"},
        {"--threads", ARG_INT, &threads, "N", "CPU threads (default: all cores)"},
        {"--backend", ARG_STR, &backend, "NAME", "cpu or cuda (default cpu)"},
        {"--dequant", ARG_BOOL, &dequant, NULL,
         "convert every weight to the backend's weight dtype at load (fp32 on the CPU) instead of keeping "
         "GGUF blocks and 16-bit weights as stored"},
        {"--base", ARG_STR, &base_path, "GGUF",
         "run the DMS model (an adapter-variant export of a run on GGUF) on GGUF's weights as stored, e.g. "
         "its Q4_1 blocks (checked to be the export's base)"},
        {"--policy", ARG_STR, &policy, "P",
         "KV cache policy: dms, full, window, sinks, tova, h2o (default: dms for a DMS model, else full)"},
        {"--budget", ARG_INT, &gp.kv.budget, "N", "tokens kept per (layer, KV head) by window/sinks/tova/h2o"},
        {"--cr", ARG_FLOAT, &cr, "X", "budget = (prompt + max tokens) / X, instead of --budget"},
        {"--sinks", ARG_INT, &gp.kv.sinks, "N", "sinks policy: first tokens always kept (default 4)"},
        {"--dms-offset", ARG_FLOAT, &gp.kv.dms_offset, "X",
         "dms: the decisions' logit offset (default: the model's, 5); higher keeps more tokens"},
        {"--block-size", ARG_INT, &gp.kv.block_size, "N",
         "tokens per KV block (default: the model's dms_paged_attention_block_size, else 16)"},
        {"--prefill-chunk", ARG_INT, &gp.kv.max_chunk, "N", "prompt tokens per forward call (default 256)"},
        {"--kv-dtype", ARG_STR, &kv_dtype, "T",
         "KV cache rows: f32, f16 or bf16 (default f32; 16-bit halves the cache, attention sums in fp32)"},
        {"--quiet", ARG_BOOL, &quiet, NULL, "do not print the generated text"},
        {"--stats-json", ARG_STR, &stats_json, "FILE", "also write timing and KV statistics as JSON"},
    };
    const dms_cmd_spec spec = {
        .name = "generate",
        .summary = "dms generate - generate text from a model, streaming, with tokens/s and KV statistics",
        .usage = "dms generate [--model PATH] --prompt TEXT [options]",
        .args = args,
        .n_args = (int)(sizeof args / sizeof args[0]),
        .epilog = "The prompt (and --system) go through the model's own chat template, rendered as\n"
                  "transformers' apply_chat_template renders it (docs/chat_templates.md); --raw skips it.\n\n"
                  "examples:\n  dms generate --prompt 'What is 7*8?'\n"
                  "  dms generate --model Qwen3-0.6B/ --prompt 'Hi' --temperature 0.7 --top-p 0.9 --seed 7\n"
                  "  dms generate --model Qwen3-0.6B/ --prompt 'Hi' --no-thinking",
    };
    int pr = dms_args_parse(&spec, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (!prompt) {
        fprintf(stderr, "dms generate: --prompt is required (see 'dms generate --help')\n");
        return 2;
    }
    if (gp.max_new_tokens <= 0 || gp.top_p <= 0 || gp.top_p > 1 || gp.temperature < 0) {
        fprintf(stderr, "dms generate: need --max-tokens > 0, 0 < --top-p <= 1, --temperature >= 0\n");
        return 2;
    }
    gp.stop_at_eos = !no_stop;
    if (policy && dms_policy_from_name(policy) < 0) {
        fprintf(stderr, "dms generate: unknown policy '%s' (dms, full, window, sinks, tova, h2o)\n", policy);
        return 2;
    }
    if (dms_kv_dtype_from_name(kv_dtype) < 0) {
        fprintf(stderr, "dms generate: unknown --kv-dtype '%s' (f32, f16, bf16)\n", kv_dtype);
        return 2;
    }
    gp.kv.kv_dtype = (dms_dtype)dms_kv_dtype_from_name(kv_dtype);
    if (cr < 0 || (cr > 0 && cr < 1) || gp.kv.budget < 0 || gp.kv.max_chunk < 0 || gp.kv.block_size < 0) {
        fprintf(stderr, "dms generate: need --cr >= 1, and --budget, --prefill-chunk, --block-size >= 0\n");
        return 2;
    }
    dms_set_threads(threads);
    if (!model_path) model_path = dms_default_model();

    dms_err err = {0};
    dms_backend be;
    if (dms_backend_open(&be, backend, 0, &err) != 0) {
        fprintf(stderr, "dms generate: %s\n", err.msg);
        return 2;
    }
    dms_model m;
    const int load_flags = DMS_LOAD_WEIGHTS | DMS_LOAD_TOKENIZER | (dequant ? 0 : DMS_LOAD_KEEP_DTYPE);
    if (dms_model_load(&m, model_path, &be, load_flags, &err) != 0) {
        fprintf(stderr, "dms generate: %s\n", err.msg);
        dms_backend_close(&be);
        return 1;
    }
    if (base_path) {
        dms_model base;
        int brc = dms_model_load(&base, base_path, &be, load_flags & ~DMS_LOAD_TOKENIZER, &err);
        if (brc == 0) {
            brc = dms_model_take_base(&m, &base, &err);
            dms_model_free(&base);
        }
        if (brc != 0) {
            fprintf(stderr, "dms generate: %s\n", err.msg);
            dms_model_free(&m);
            dms_backend_close(&be);
            return 1;
        }
    }
    gp.kv.policy = policy                                     ? (dms_policy)dms_policy_from_name(policy)
                   : m.has_heads && !m.cfg.dms.disable_eviction ? DMS_POLICY_DMS
                                                               : DMS_POLICY_FULL;
    char *text = NULL;
    const char *tpl = dms_tokenizer_chat_template(m.tok);
    if (!raw && tpl) {
        dms_chat_msg msgs[2];
        size_t n = 0;
        if (system) msgs[n++] = (dms_chat_msg){"system", system, NULL};
        msgs[n++] = (dms_chat_msg){"user", prompt, NULL};
        dms_chat_opts co;
        dms_chat_opts_default(&co);
        co.add_generation_prompt = 1;
        if (no_thinking) co.enable_thinking = 0;
        text = dms_tokenizer_chat_render(m.tok, msgs, n, &co, &err);
        if (!text) {
            fprintf(stderr, "dms generate: %s: %s\n", model_path, err.msg);
            dms_model_free(&m);
            dms_backend_close(&be);
            return 1;
        }
    } else {
        text = strdup(prompt);
        if (!text) {
            fprintf(stderr, "dms generate: out of memory\n");
            dms_model_free(&m);
            dms_backend_close(&be);
            return 1;
        }
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = 0;
    if (dms_tokenizer_encode(m.tok, text, strlen(text), !raw, &ids, &n_ids, &err) != 0) {
        fprintf(stderr, "dms generate: %s\n", err.msg);
        rc = 1;
    }
    if (rc == 0 && dms_tokenizer_prepend_bos(m.tok, &ids, &n_ids, &err) != 0) {
        fprintf(stderr, "dms generate: %s\n", err.msg);
        rc = 1;
    }
    if (cr > 0) gp.kv.budget = (int)((n_ids + (size_t)gp.max_new_tokens + cr - 1) / cr);
    dms_gen_stats st;
    stream_ctx sc = {m.tok, quiet};
    if (rc == 0 && dms_generate(&m, ids, (int)n_ids, &gp, stream_token, &sc, NULL, &st, &err) != 0) {
        fprintf(stderr, "\ndms generate: %s\n", err.msg);
        rc = 1;
    }
    if (rc == 0) {
        if (!quiet) {
            putchar('\n');
            fflush(stdout); /* before the statistics on stderr */
        }
        const dms_kv_stats *k = &st.kv;
        char budget[64] = "";
        if (gp.kv.policy != DMS_POLICY_DMS && gp.kv.policy != DMS_POLICY_FULL)
            snprintf(budget, sizeof budget, ", budget %d", gp.kv.budget);
        fprintf(stderr,
                "[dms] prompt %d tok, prefill %.2f s (%.1f tok/s) | generated %d tok, decode %.1f tok/s%s\n"
                "[dms] KV cache (policy %s%s, %s, blocks of %d): %lld tokens seen; held per (layer, head): %.1f now, "
                "%.1f on average, %.1f at peak\n"
                "[dms] KV CR %.2f (tokens seen / held); %.2f MiB held vs %.2f MiB vanilla: %.2f MiB saved (%.0f%%)\n",
                st.prompt_tokens, st.prefill_s, st.prefill_s > 0 ? st.prompt_tokens / st.prefill_s : 0,
                st.new_tokens, st.decode_s > 0 ? st.decode_steps / st.decode_s : 0,
                st.stopped_by_eos ? " (stopped at end of turn)" : "", dms_policy_name(gp.kv.policy), budget,
                dms_dtype_name(gp.kv.kv_dtype), st.kv_block_size, (long long)k->seen, k->held_mean, k->held_time_mean, k->held_peak, k->kv_cr,
                k->bytes_held / 1048576.0, k->bytes_vanilla / 1048576.0,
                ((double)k->bytes_vanilla - (double)k->bytes_held) / 1048576.0,
                k->bytes_vanilla ? 100.0 * (1.0 - (double)k->bytes_held / k->bytes_vanilla) : 0.0);
        if (gp.kv.policy == DMS_POLICY_DMS)
            fprintf(stderr, "[dms] decision CR %.2f (1 / (1 - fraction of tokens flagged); the KV CR is what memory gets)\n",
                    k->decision_cr);
        if (stats_json && write_stats_json(stats_json, &m, &gp, &st, threads, dequant) != 0) rc = 1;
    }
    free(ids);
    free(text);
    dms_model_free(&m);
    dms_backend_close(&be);
    return rc;
}
