/* bench_decode.c - `dms bench decode --cpu`: greedy decode speed of our CPU
 * runtime against llama.cpp (llama-cpp-python, bench/llama_cpp_decode.py)
 * on the same GGUF file, the same prompt token ids, thread count and token
 * count, at several context lengths, measured back to back in one run:
 *   - ours on the GGUF as stored (Q4_1 / Q8_0 blocks) under policy full;
 *   - ours with DMS: an adapter-variant export of a run on that GGUF
 *     (--dms4 / --dms8), its base weights swapped for the GGUF's blocks
 *     (dms_model_take_base), under policy dms;
 *   - llama.cpp on the GGUF (vanilla: it has no DMS), flash attention off
 *     (llama-cpp-python's default) and on; ratios are against the faster.
 * The prompt of context C is the first C - tokens ids of a text (repeated
 * as needed), so that the last decoded token sits at position C - 1.
 * Without llama-cpp-python it says so in one line and times ours alone.
 * Writes bench/results/cpu_decode-<host>-<date>.json with the CPU model,
 * threads, commit and load averages. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/bench_decode.h"
#include "cli/bench_host.h"
#include "cli/commands.h"
#include "core/fs.h"
#include "kernels/dtype.h"
#include "kernels/registry.h"
#include "model/model.h"
#include "runtime/generate.h"

#define MAX_CTX 8
enum { RUN_VANILLA = 0, RUN_DMS4, RUN_DMS8, RUN_OURS, RUN_PEER = RUN_OURS, RUN_PEER_FA, RUN_ALL };
static const char *const run_names[RUN_ALL] = {"dms_vanilla", "dms_4x", "dms_8x", "llama_cpp", "llama_cpp_flash_attn"};

/* The first n ids of the text, repeated as needed (BOS first if the tokenizer has one). */
static int32_t *prompt_ids(const dms_model *m, const char *text_path, int n, dms_err *err) {
    FILE *f = fopen(text_path, "rb");
    if (!f) {
        dms_errf(err, "%s: cannot read the prompt text (--text FILE)", text_path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    const long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)len + 1);
    const size_t got = text ? fread(text, 1, (size_t)len, f) : 0;
    fclose(f);
    if (!text || got != (size_t)len) {
        free(text);
        dms_errf(err, "%s: cannot read the prompt text", text_path);
        return NULL;
    }
    text[len] = 0;
    int32_t *ids = NULL, *out = NULL;
    size_t n_ids = 0;
    int rc = dms_tokenizer_encode(m->tok, text, (size_t)len, 0, &ids, &n_ids, err);
    free(text);
    if (rc == 0 && n_ids == 0) rc = dms_errf(err, "%s: no tokens", text_path);
    int32_t *bos = NULL;
    size_t n_bos = 0;
    if (rc == 0) rc = dms_tokenizer_prepend_bos(m->tok, &bos, &n_bos, err); /* [BOS] or nothing */
    if (rc == 0 && !(out = malloc(sizeof(int32_t) * (size_t)n))) rc = dms_errf(err, "out of memory");
    for (int i = 0; rc == 0 && i < n; i++)
        out[i] = i < (int)n_bos ? bos[i] : ids[(size_t)(i - (int)n_bos) % n_ids];
    free(ids);
    free(bos);
    if (rc) {
        free(out);
        return NULL;
    }
    return out;
}

static void shell_quote(char *dst, size_t cap, const char *s) {
    size_t j = 0;
    if (j < cap - 1) dst[j++] = '\'';
    for (; *s && j + 5 < cap; s++) {
        if (*s == '\'') {
            memcpy(dst + j, "'\\''", 4);
            j += 4;
        } else {
            dst[j++] = *s;
        }
    }
    if (j < cap - 1) dst[j++] = '\'';
    dst[j] = 0;
}

/* llama.cpp through the helper script: its JSON, or NULL with *why set. */
static cJSON *run_peer(const char *python, const char *model, const int32_t *ids, int n, int tokens, int threads,
                       int flash_attn, char *why, size_t why_cap) {
    char ids_path[] = "/tmp/dms-bench-ids-XXXXXX";
    const int fd = mkstemp(ids_path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        snprintf(why, why_cap, "cannot write a temporary file");
        return NULL;
    }
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, i ? ",%d" : "%d", ids[i]);
    fputs("]\n", f);
    fclose(f);
    char qp[1100], qm[1100], qs[1100], cmd[4096];
    shell_quote(qp, sizeof qp, python);
    shell_quote(qm, sizeof qm, model);
    shell_quote(qs, sizeof qs, DMS_SOURCE_DIR "/bench/llama_cpp_decode.py");
    snprintf(cmd, sizeof cmd, "%s %s --model %s --ids %s --tokens %d --threads %d%s", qp, qs, qm, ids_path, tokens,
             threads, flash_attn ? " --flash-attn" : "");
    FILE *p = popen(cmd, "r");
    size_t cap = 1 << 16, used = 0;
    char *buf = malloc(cap);
    while (p && buf) {
        if (used + 4096 > cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) break;
            buf = nb;
        }
        const size_t r = fread(buf + used, 1, cap - used - 1, p);
        if (r == 0) break;
        used += r;
    }
    const int status = p ? pclose(p) : -1;
    unlink(ids_path);
    cJSON *o = NULL;
    if (buf) {
        buf[used] = 0;
        o = cJSON_Parse(buf);
    }
    free(buf);
    const cJSON *e = o ? cJSON_GetObjectItemCaseSensitive(o, "error") : NULL;
    if (!o || cJSON_IsString(e) || status != 0) {
        snprintf(why, why_cap, "%s", cJSON_IsString(e) ? e->valuestring
                                     : p ? "bench/llama_cpp_decode.py failed (run it by hand to see why)"
                                         : "cannot run python");
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *ours_json(const dms_gen_stats *s, const dms_gen_params *gp) {
    cJSON *o = cJSON_CreateObject();
    dms_gen_timing_json(o, s);
    cJSON_AddStringToObject(o, "policy", dms_policy_name(gp->kv.policy));
    cJSON_AddStringToObject(o, "kv_dtype", dms_dtype_name(gp->kv.kv_dtype));
    cJSON_AddNumberToObject(o, "kv_cr", s->kv.kv_cr);
    cJSON_AddNumberToObject(o, "decision_cr", s->kv.decision_cr);
    cJSON_AddNumberToObject(o, "kv_held_mean", s->kv.held_mean);
    cJSON_AddNumberToObject(o, "kv_bytes_held", (double)s->kv.bytes_held);
    cJSON_AddNumberToObject(o, "kv_bytes_vanilla", (double)s->kv.bytes_vanilla);
    return o;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* A DMS export running on the GGUF's blocks (-1 with err on failure). */
static int load_dms(dms_model *dm, const char *dir, const char *gguf, const dms_backend *be, dms_err *err) {
    if (dms_model_load(dm, dir, be, DMS_LOAD_WEIGHTS | DMS_LOAD_KEEP_DTYPE, err) != 0) return -1;
    dms_model base;
    if (dms_model_load(&base, gguf, be, DMS_LOAD_WEIGHTS | DMS_LOAD_KEEP_DTYPE, err) != 0) {
        dms_model_free(dm);
        return -1;
    }
    const int rc = dms_model_take_base(dm, &base, err);
    dms_model_free(&base); /* now holding the export's own weights */
    if (rc) dms_model_free(dm);
    return rc;
}

int dms_bench_decode(const dms_bench_decode_opts *o) {
    int ctx[MAX_CTX], n_ctx = 0;
    for (const char *s = o->contexts; s && *s && n_ctx < MAX_CTX;) {
        char *end;
        const long v = strtol(s, &end, 10);
        if (end == s || v <= o->tokens) {
            fprintf(stderr, "dms bench decode: --contexts: each above --tokens (%d): '%s'\n", o->tokens, o->contexts);
            return 2;
        }
        ctx[n_ctx++] = (int)(*end == 'K' || *end == 'k' ? v * 1024 : v);
        s = end + (*end == 'K' || *end == 'k');
        s += *s == ',';
    }
    dms_set_threads(o->threads);
    dms_err err = {0};
    dms_backend be;
    if (dms_backend_open(&be, "cpu", 0, &err) != 0) {
        fprintf(stderr, "dms bench decode: %s\n", err.msg);
        return 1;
    }
    dms_model models[3];
    int have[3] = {0, 0, 0}, rc = 0;
    const char *paths[3] = {o->model, o->dms4, o->dms8};
    if (dms_model_load(&models[0], o->model, &be, DMS_LOAD_WEIGHTS | DMS_LOAD_TOKENIZER | DMS_LOAD_KEEP_DTYPE, &err)) {
        fprintf(stderr, "dms bench decode: %s\n", err.msg);
        dms_backend_close(&be);
        return 1;
    }
    have[0] = 1;
    for (int k = 1; k < 3 && rc == 0; k++) {
        if (!paths[k]) continue;
        if (load_dms(&models[k], paths[k], o->model, &be, &err) != 0) {
            fprintf(stderr, "dms bench decode: %s\n", err.msg);
            rc = 1;
        } else {
            have[k] = 1;
        }
    }
    for (int c = 0; rc == 0 && c < n_ctx; c++)
        if (ctx[c] > models[0].cfg.max_pos) {
            fprintf(stderr, "dms bench decode: context %d past the model's %d\n", ctx[c], models[0].cfg.max_pos);
            rc = 2;
        }
    char cpu[256], load0[128], load1[128], host[64] = "host", date[32], path[1024];
    dms_bench_read_line("/proc/cpuinfo", "model name", cpu, sizeof cpu);
    dms_bench_read_line("/proc/loadavg", NULL, load0, sizeof load0);
    gethostname(host, sizeof host - 1);
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    cJSON *root = cJSON_CreateObject(), *rows = NULL;
    cJSON_AddStringToObject(root, "benchmark",
                            "cpu greedy decode: dms (vanilla, DMS) vs llama.cpp, same GGUF, prompt ids, threads, tokens");
    cJSON_AddStringToObject(root, "date", date);
    char commit[96];
    dms_bench_source_revision(commit, sizeof commit);
    cJSON_AddStringToObject(root, "commit", commit);
    cJSON_AddStringToObject(root, "cpu", cpu);
    cJSON_AddNumberToObject(root, "cores_online", (double)sysconf(_SC_NPROCESSORS_ONLN));
    cJSON_AddNumberToObject(root, "threads", o->threads);
    cJSON_AddStringToObject(root, "loadavg_start", load0);
    /* both runtimes wait at barriers by libgomp's policy (inherited by the peer) */
    const char *wait = getenv("OMP_WAIT_POLICY");
    cJSON_AddStringToObject(root, "omp_wait_policy", wait && *wait ? wait : "default (active spin, then sleep)");
    cJSON_AddStringToObject(root, "model", o->model);
    cJSON_AddStringToObject(root, "weight_types", models[0].weight_types);
    cJSON_AddStringToObject(root, "kv_dtype", dms_dtype_name(o->kv_dtype));
    cJSON_AddStringToObject(root, "text", o->text);
    cJSON_AddNumberToObject(root, "tokens", o->tokens);
    if (o->dms4) cJSON_AddStringToObject(root, "dms_4x_model", o->dms4);
    if (o->dms8) cJSON_AddStringToObject(root, "dms_8x_model", o->dms8);
    rows = cJSON_AddArrayToObject(root, "contexts");
    char peer_why[512] = "";
    int peer_ok = 1;
    if (rc == 0)
        printf("%-8s %-22s %12s %12s %9s %8s\n", "context", "run", "prefill t/s", "decode t/s", "KV CR", "x llama");
    for (int c = 0; rc == 0 && c < n_ctx; c++) {
        const int n_prompt = ctx[c] - o->tokens;
        int32_t *ids = prompt_ids(&models[0], o->text, n_prompt, &err);
        if (!ids) {
            fprintf(stderr, "dms bench decode: %s\n", err.msg);
            rc = 1;
            break;
        }
        cJSON *row = cJSON_CreateObject();
        cJSON_AddNumberToObject(row, "context", ctx[c]);
        cJSON_AddNumberToObject(row, "prompt_tokens", n_prompt);
        double dec[RUN_ALL] = {0}, pre[RUN_ALL] = {0}, cr[RUN_ALL] = {0};
        int32_t *van_out = NULL;
        /* the peer first (two modes), then ours, back to back */
        for (int fa = 0; fa < 2 && peer_ok; fa++) {
            cJSON *p = run_peer(o->python, o->model, ids, n_prompt, o->tokens, o->threads, fa, peer_why, sizeof peer_why);
            if (!p) {
                printf("llama.cpp peer not run: %s; timing ours only\n", peer_why);
                peer_ok = 0;
                break;
            }
            dec[RUN_PEER + fa] = num(p, "decode_tok_s");
            pre[RUN_PEER + fa] = num(p, "prefill_tok_s");
            cJSON_AddItemToObject(row, run_names[RUN_PEER + fa], p);
        }
        for (int k = 0; k < 3 && rc == 0; k++) {
            if (!have[k]) continue;
            dms_gen_params gp;
            dms_gen_params_default(&gp);
            gp.max_new_tokens = o->tokens;
            gp.stop_at_eos = 0;
            gp.kv.kv_dtype = o->kv_dtype;
            gp.kv.policy = k ? DMS_POLICY_DMS : DMS_POLICY_FULL;
            dms_gen_stats st;
            int32_t *out = NULL;
            if (dms_generate(&models[k], ids, n_prompt, &gp, NULL, NULL, &out, &st, &err) != 0) {
                fprintf(stderr, "dms bench decode: %s: %s\n", paths[k], err.msg);
                rc = 1;
                break;
            }
            dec[k] = st.decode_s > 0 ? st.decode_steps / st.decode_s : 0;
            pre[k] = st.prefill_s > 0 ? st.prompt_tokens / st.prefill_s : 0;
            cr[k] = st.kv.kv_cr;
            cJSON *j = ours_json(&st, &gp);
            if (k) cJSON_AddStringToObject(j, "model", paths[k]);
            cJSON_AddItemToObject(row, run_names[k], j);
            if (k == 0) van_out = out;
            else free(out);
        }
        const double peer_dec = dec[RUN_PEER] > dec[RUN_PEER_FA] ? dec[RUN_PEER] : dec[RUN_PEER_FA];
        const double peer_pre = pre[RUN_PEER] > pre[RUN_PEER_FA] ? pre[RUN_PEER] : pre[RUN_PEER_FA];
        if (peer_dec > 0 && rc == 0) {
            cJSON *r = cJSON_AddObjectToObject(row, "ratios_vs_faster_llama_cpp");
            for (int k = 0; k < 3; k++)
                if (have[k]) {
                    char key[64];
                    snprintf(key, sizeof key, "%s_decode", run_names[k]);
                    cJSON_AddNumberToObject(r, key, dec[k] / peer_dec);
                    snprintf(key, sizeof key, "%s_prefill", run_names[k]);
                    cJSON_AddNumberToObject(r, key, pre[k] / peer_pre);
                }
            /* greedy agreement of the vanilla runs (int8 activations on both sides: they may part at a near tie) */
            const cJSON *pids = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(row, run_names[RUN_PEER]), "ids");
            int same = 0;
            for (int i = 0; van_out && i < o->tokens && i < cJSON_GetArraySize(pids); i++, same++)
                if (cJSON_GetArrayItem(pids, i)->valueint != van_out[i]) break;
            cJSON_AddNumberToObject(row, "greedy_common_prefix_tokens_vanilla_vs_llama_cpp", same);
        }
        for (int k = 0; k < RUN_ALL; k++) {
            if (dec[k] <= 0) continue;
            char ratio[32] = "-", crs[32] = "-";
            if (peer_dec > 0) snprintf(ratio, sizeof ratio, "%.2f", dec[k] / peer_dec);
            if (k < RUN_OURS) snprintf(crs, sizeof crs, "%.2f", cr[k]);
            printf("%-8d %-22s %12.1f %12.1f %9s %8s\n", ctx[c], run_names[k], pre[k], dec[k], crs, ratio);
        }
        fflush(stdout);
        free(van_out);
        free(ids);
        cJSON_AddItemToArray(rows, row);
    }
    dms_bench_read_line("/proc/loadavg", NULL, load1, sizeof load1);
    cJSON_AddStringToObject(root, "loadavg_end", load1);
    if (!peer_ok) cJSON_AddStringToObject(root, "llama_cpp_missing", peer_why);
    if (rc == 0 && o->out_dir) {
        snprintf(path, sizeof path, "%s/cpu_decode-%s-%.10s.json", o->out_dir, host, date);
        if (dms_mkdir_p(o->out_dir, &err) != 0 || dms_write_json(path, root, &err) != 0) {
            fprintf(stderr, "dms bench decode: %s\n", err.msg);
            rc = 1;
        } else {
            printf("-> %s\n", path);
        }
    }
    cJSON_Delete(root);
    for (int k = 0; k < 3; k++)
        if (have[k]) dms_model_free(&models[k]);
    dms_backend_close(&be);
    return rc;
}
