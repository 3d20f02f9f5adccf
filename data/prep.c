/* prep.c - `dms prep` as a library function (prep.h): reads JSONL line by
 * line, renders and tokenizes each document with the model's own tokenizer
 * and chat template, and streams documents into token shards of about
 * shard_tokens tokens each, then records what it did in prep.json. */
#include "data/prep.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/fs.h"
#include "data/pack.h"
#include "data/shards.h"
#include "kernels/backend.h"
#include "model/model.h"

void dms_prep_opts_default(dms_prep_opts *o) {
    memset(o, 0, sizeof *o);
    o->max_len = 2048;
    o->shard_tokens = 50000000;
    o->enable_thinking = -1;
}

void dms_prep_line_opts_default(dms_prep_line_opts *lo) {
    memset(lo, 0, sizeof *lo);
    lo->enable_thinking = -1;
}

void dms_prep_doc_free(dms_prep_doc *d) {
    free(d->ids);
    free(d->mask);
    memset(d, 0, sizeof *d);
}

/* ------------------------------------------------------------- documents */

static int doc_push(dms_prep_doc *d, const int32_t *ids, size_t n, uint8_t mask, dms_err *err) {
    if (d->n + n > d->cap) {
        size_t cap = d->cap ? d->cap : 1024;
        while (cap < d->n + n) cap *= 2;
        uint32_t *i2 = realloc(d->ids, sizeof(uint32_t) * cap);
        if (i2) d->ids = i2;
        uint8_t *m2 = i2 ? realloc(d->mask, cap) : NULL;
        if (!m2) return dms_errf(err, "out of memory for a document of %zu tokens", d->n + n);
        d->mask = m2;
        d->cap = cap;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0) return dms_errf(err, "tokenizer produced a negative id");
        d->ids[d->n] = (uint32_t)ids[i];
        d->mask[d->n++] = mask;
    }
    return 0;
}

/* Number of leading ids that a and b share. */
static size_t common_prefix(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

/* Encodes `full` (BOS first when the tokenizer wants it, EOS last when
 * add_eos). With prompt != NULL, the tokens that `prompt` (a prefix of
 * `full` as text) tokenizes to get mask 0: the longest common prefix of the
 * two encodings, so a token merged across the boundary counts in the loss. */
static int encode_doc(const dms_tokenizer *tok, const char *full, const char *prompt, int parse_special,
                      int add_eos, dms_prep_doc *doc, dms_err *err) {
    int32_t *ids = NULL, *pids = NULL;
    size_t n = 0, pn = 0;
    if (dms_tokenizer_encode(tok, full, strlen(full), parse_special, &ids, &n, err) != 0) return -1;
    size_t masked = 0;
    if (prompt) {
        if (dms_tokenizer_encode(tok, prompt, strlen(prompt), parse_special, &pids, &pn, err) != 0) {
            free(ids);
            return -1;
        }
        masked = common_prefix(ids, n, pids, pn);
        free(pids);
    }
    const int32_t bos = dms_tokenizer_bos(tok), eos = dms_tokenizer_eos(tok);
    int rc = 0;
    if (dms_tokenizer_add_bos(tok) && bos >= 0 && (n == 0 || ids[0] != bos))
        rc = doc_push(doc, &bos, 1, prompt ? 0 : 1, err);
    if (!rc) rc = doc_push(doc, ids, masked, 0, err);
    if (!rc) rc = doc_push(doc, ids + masked, n - masked, 1, err);
    if (!rc && add_eos && eos >= 0) rc = doc_push(doc, &eos, 1, 1, err);
    free(ids);
    return rc;
}

static int encode_chat(const dms_tokenizer *tok, const dms_chat_msg *msgs, size_t n, const dms_prep_line_opts *lo,
                       dms_prep_doc *doc, dms_err *err) {
    dms_chat_opts co;
    dms_chat_opts_default(&co);
    co.enable_thinking = lo->enable_thinking;
    char *full = dms_tokenizer_chat_render(tok, msgs, n, &co, err);
    if (!full) return -1;
    char *prompt = NULL;
    if (lo->mask_prompt) {
        size_t last = n;
        for (size_t i = 0; i < n; i++)
            if (!strcmp(msgs[i].role, "assistant")) last = i;
        if (last == n) {
            free(full);
            return dms_errf(err, "--mask-prompt: the conversation has no assistant message to train on");
        }
        /* everything before the last assistant message, plus its header */
        co.add_generation_prompt = 1;
        prompt = dms_tokenizer_chat_render(tok, msgs, last, &co, err);
        if (!prompt) {
            free(full);
            return -1;
        }
    }
    int rc = encode_doc(tok, full, prompt, 1, 0, doc, err);
    free(full);
    free(prompt);
    return rc;
}

static const char *json_type(const cJSON *x) {
    if (cJSON_IsString(x)) return "a string";
    if (cJSON_IsNumber(x)) return "a number";
    if (cJSON_IsArray(x)) return "an array";
    if (cJSON_IsObject(x)) return "an object";
    if (cJSON_IsBool(x)) return "a boolean";
    return "null";
}

int dms_prep_encode_line(const dms_tokenizer *tok, const char *line, size_t len, int mask_prompt, dms_prep_doc *doc,
                         int *fatal, dms_err *err) {
    dms_prep_line_opts lo;
    dms_prep_line_opts_default(&lo);
    lo.mask_prompt = mask_prompt;
    return dms_prep_encode_line_opts(tok, line, len, &lo, doc, fatal, err);
}

int dms_prep_encode_line_opts(const dms_tokenizer *tok, const char *line, size_t len, const dms_prep_line_opts *lo,
                              dms_prep_doc *doc, int *fatal, dms_err *err) {
    const int mask_prompt = lo->mask_prompt;
    doc->n = 0;
    *fatal = 0;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(line, len, &end, 0);
    if (!j) return dms_errf(err, "not valid JSON");
    while (end && end < line + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')) end++;
    if (end && end < line + len && *end) {
        cJSON_Delete(j);
        return dms_errf(err, "not valid JSON (text after the value; one JSON object per line)");
    }
    int rc = 0;
    const char *tpl = dms_tokenizer_chat_template(tok);
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(j, "prompt");
    const cJSON *response = cJSON_GetObjectItemCaseSensitive(j, "response");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
    if (!cJSON_IsObject(j)) {
        rc = dms_errf(err, "expected a JSON object, got %s", json_type(j));
    } else if (msgs) {
        int n = cJSON_GetArraySize(msgs);
        if (!cJSON_IsArray(msgs) || n == 0) {
            rc = dms_errf(err, "'messages' must be a non-empty array, got %s", json_type(msgs));
        } else if (!tpl) {
            *fatal = 1;
            rc = dms_errf(err, "the model has no chat template, so 'messages' cannot be rendered");
        } else {
            dms_chat_msg *m = calloc((size_t)n, sizeof *m);
            int i = 0;
            for (const cJSON *x = msgs->child; m && x && !rc; x = x->next, i++) {
                const cJSON *role = cJSON_GetObjectItemCaseSensitive(x, "role");
                const cJSON *content = cJSON_GetObjectItemCaseSensitive(x, "content");
                const cJSON *reasoning = cJSON_GetObjectItemCaseSensitive(x, "reasoning_content");
                if (!cJSON_IsObject(x) || !cJSON_IsString(role) || !cJSON_IsString(content))
                    rc = dms_errf(err, "messages[%d] must be an object with string 'role' and 'content'", i);
                else if (reasoning && !cJSON_IsString(reasoning) && !cJSON_IsNull(reasoning))
                    rc = dms_errf(err, "messages[%d].reasoning_content must be a string or null, got %s", i,
                                  json_type(reasoning));
                else
                    m[i] = (dms_chat_msg){role->valuestring, content->valuestring,
                                          cJSON_IsString(reasoning) ? reasoning->valuestring : NULL};
            }
            if (!m) rc = dms_errf(err, "out of memory");
            if (!rc) rc = encode_chat(tok, m, (size_t)n, lo, doc, err);
            free(m);
        }
    } else if (prompt || response) {
        if (!cJSON_IsString(prompt) || !cJSON_IsString(response)) {
            rc = dms_errf(err, "'prompt' and 'response' must both be strings (got %s and %s)",
                          prompt ? json_type(prompt) : "nothing", response ? json_type(response) : "nothing");
        } else if (tpl) {
            dms_chat_msg m[2] = {{"user", prompt->valuestring, NULL}, {"assistant", response->valuestring, NULL}};
            rc = encode_chat(tok, m, 2, lo, doc, err);
        } else {
            size_t lp = strlen(prompt->valuestring), lr = strlen(response->valuestring);
            char *full = malloc(lp + lr + 1);
            if (!full) {
                rc = dms_errf(err, "out of memory");
            } else {
                memcpy(full, prompt->valuestring, lp);
                memcpy(full + lp, response->valuestring, lr + 1);
                rc = encode_doc(tok, full, mask_prompt ? prompt->valuestring : NULL, !lo->literal_special, 1, doc, err);
                free(full);
            }
        }
    } else if (text) {
        if (!cJSON_IsString(text)) rc = dms_errf(err, "'text' must be a string, got %s", json_type(text));
        else rc = encode_doc(tok, text->valuestring, NULL, !lo->literal_special, 1, doc, err);
    } else {
        rc = dms_errf(err, "no 'messages', 'prompt'/'response' or 'text' field");
    }
    if (!rc && doc->n == 0) rc = dms_errf(err, "empty document (no tokens)");
    cJSON_Delete(j);
    return rc;
}

/* ------------------------------------------------------------------- run */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Removes shard-NNNNN.h5 files with NNNNN >= keep, and *.h5.tmp leftovers. */
static void remove_stale(const char *dir, int64_t keep) {
    DIR *dp = opendir(dir);
    if (!dp) return;
    struct dirent *e;
    while ((e = readdir(dp))) {
        const char *s = e->d_name;
        if (strncmp(s, "shard-", 6) != 0) continue;
        char *end;
        long long idx = strtoll(s + 6, &end, 10);
        if (end == s + 6) continue;
        int stale = (!strcmp(end, ".h5") && idx >= keep) || !strcmp(end, ".h5.tmp");
        if (!stale) continue;
        char full[PATH_MAX];
        if (snprintf(full, sizeof full, "%s/%s", dir, s) < (int)sizeof full) unlink(full);
    }
    closedir(dp);
}

static int write_prep_json(const dms_prep_opts *o, const dms_prep_stats *st, dms_err *err) {
    char path[PATH_MAX], tmp[PATH_MAX + 8], hash[32];
    snprintf(path, sizeof path, "%s/prep.json", o->output);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    snprintf(hash, sizeof hash, "0x%016" PRIx64, st->tokenizer_hash);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "format", DMS_SHARD_FORMAT);
    cJSON_AddNumberToObject(j, "format_version", DMS_SHARD_FORMAT_VERSION);
    cJSON_AddStringToObject(j, "model", o->model);
    cJSON_AddStringToObject(j, "tokenizer_hash", hash);
    cJSON_AddNumberToObject(j, "vocab_size", st->vocab_size);
    cJSON_AddNumberToObject(j, "max_len", o->max_len);
    cJSON_AddStringToObject(j, "packing", dms_packing_name(o->packing));
    cJSON_AddBoolToObject(j, "mask_prompt", o->mask_prompt != 0);
    cJSON_AddBoolToObject(j, "literal_special", o->literal_special != 0);
    if (o->enable_thinking >= 0) cJSON_AddBoolToObject(j, "enable_thinking", o->enable_thinking != 0);
    cJSON_AddNumberToObject(j, "shard_tokens", (double)o->shard_tokens);
    cJSON *in = cJSON_AddArrayToObject(j, "inputs");
    for (int i = 0; i < o->n_inputs; i++) cJSON_AddItemToArray(in, cJSON_CreateString(o->inputs[i]));
    cJSON_AddNumberToObject(j, "lines", (double)st->lines);
    cJSON_AddNumberToObject(j, "documents", (double)st->documents);
    cJSON_AddNumberToObject(j, "tokens", (double)st->tokens);
    cJSON_AddNumberToObject(j, "rows", (double)st->rows);
    cJSON *kept = cJSON_AddObjectToObject(j, "tokens_kept"); /* per packing, of the same documents */
    for (int k = 0; k < 2; k++) cJSON_AddNumberToObject(kept, dms_packing_name((dms_packing)k), (double)st->kept[k]);
    cJSON_AddNumberToObject(j, "skipped_lines", (double)st->skipped);
    cJSON_AddNumberToObject(j, "shards", (double)st->shards);
    cJSON *files = cJSON_AddArrayToObject(j, "files");
    for (int64_t i = 0; i < st->shards; i++) {
        char name[64];
        snprintf(name, sizeof name, "shard-%05" PRId64 ".h5", i);
        cJSON_AddItemToArray(files, cJSON_CreateString(name));
    }
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return dms_errf(err, "%s: out of memory", path);
    FILE *f = fopen(tmp, "w");
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int e = errno;
    if (f && fclose(f) != 0) ok = 0;
    free(text);
    if (!ok || rename(tmp, path) != 0) {
        if (ok) e = errno;
        unlink(tmp);
        return dms_errf(err, "%s: cannot write: %s", path, strerror(e));
    }
    return 0;
}

typedef struct {
    const dms_prep_opts *o;
    dms_prep_stats *st;
    dms_packer *pk; /* NULL until the model is loaded */
    char source[1024];
    double t0, t_report;
} prep_ctx;

static int add_doc(prep_ctx *c, const dms_prep_doc *d, dms_err *err) {
    if (dms_packer_add(c->pk, d->ids, d->mask, d->n, err) != 0) return -1;
    c->st->documents++;
    c->st->tokens += (int64_t)d->n;
    return 0;
}

static void report(prep_ctx *c) {
    double t = now_s();
    if (!c->o->progress || t - c->t_report < 5.0) return;
    c->t_report = t;
    double dt = t - c->t0 > 1e-9 ? t - c->t0 : 1e-9;
    dms_pack_stats ps;
    dms_packer_stats(c->pk, &ps);
    fprintf(stderr, "[prep] %" PRId64 " documents, %.2fM tokens, %" PRId64 " shards | %.0f docs/s, %.2fM tok/s\n",
            c->st->documents, c->st->tokens / 1e6, ps.shards, c->st->documents / dt, c->st->tokens / 1e6 / dt);
}

/* One input file; 1 when the document limit was reached. */
static int prep_file(prep_ctx *c, const dms_tokenizer *tok, const char *path, dms_prep_doc *doc, dms_err *err) {
    FILE *f = fopen(path, "r");
    if (!f) return dms_errf(err, "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int64_t lineno = 0;
    int rc = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        c->st->lines++;
        size_t i = 0;
        while (i < (size_t)len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\n')) i++;
        if (i == (size_t)len) continue; /* blank line */
        int fatal = 0;
        const dms_prep_line_opts lo = {c->o->mask_prompt, c->o->literal_special, c->o->enable_thinking};
        if (dms_prep_encode_line_opts(tok, line, (size_t)len, &lo, doc, &fatal, err) != 0) {
            if (c->o->skip_bad && !fatal) {
                c->st->skipped++;
                continue;
            }
            rc = dms_err_prefix(err, "%s:%" PRId64, path, lineno);
            break;
        }
        if (add_doc(c, doc, err) != 0) {
            rc = -1;
            break;
        }
        if (c->o->limit > 0 && c->st->documents >= c->o->limit) {
            rc = 1;
            break;
        }
        if ((c->st->documents & 255) == 0) report(c);
    }
    if (rc == 0 && ferror(f)) rc = dms_errf(err, "%s: read error after line %" PRId64 ": %s", path, lineno, strerror(errno));
    free(line);
    fclose(f);
    return rc;
}

int dms_prep_run(const dms_prep_opts *o, dms_prep_stats *st, dms_err *err) {
    memset(st, 0, sizeof *st);
    if (!o->model || !o->output || o->n_inputs <= 0)
        return dms_errf(err, "prep: needs a model, at least one input and an output folder");
    if (o->max_len <= 0 || o->max_len > DMS_SHARD_MAX_LEN)
        return dms_errf(err, "prep: max_len must be 1 to %d (got %d)", DMS_SHARD_MAX_LEN, o->max_len);
    if (o->shard_tokens <= 0) return dms_errf(err, "prep: shard_tokens must be positive");
    for (int i = 0; i < o->n_inputs; i++) {
        if (dms_is_dir(o->inputs[i])) return dms_errf(err, "%s: is a folder, expected a JSONL file", o->inputs[i]);
        FILE *f = fopen(o->inputs[i], "r");
        if (!f) return dms_errf(err, "%s: cannot open: %s", o->inputs[i], strerror(errno));
        fclose(f);
    }
    dms_model m;
    if (dms_model_load(&m, o->model, &dms_cpu_ops, DMS_LOAD_TOKENIZER, err) != 0) return -1;
    const double t0 = now_s();
    prep_ctx c = {.o = o, .st = st, .t0 = t0, .t_report = t0};
    st->tokenizer_hash = dms_tokenizer_hash(m.tok);
    st->vocab_size = dms_tokenizer_vocab_size(m.tok);
    size_t at = (size_t)snprintf(c.source, sizeof c.source, "dms prep of");
    for (int i = 0; i < o->n_inputs && at < sizeof c.source; i++)
        at += (size_t)snprintf(c.source + at, sizeof c.source - at, "%s%s", i ? ", " : " ", o->inputs[i]);
    dms_prep_doc doc = {0};
    const dms_packer_opts po = {.packing = o->packing, .max_len = o->max_len, .shard_tokens = o->shard_tokens,
                                .dir = o->output, .tokenizer_hash = st->tokenizer_hash,
                                .vocab_size = st->vocab_size, .source = c.source, .with_loss_mask = o->mask_prompt};
    int rc = dms_mkdir_p(o->output, err);
    if (!rc && !(c.pk = dms_packer_create(&po, err))) rc = -1;
    if (!rc) {
        char pj[PATH_MAX];
        snprintf(pj, sizeof pj, "%s/prep.json", o->output);
        unlink(pj); /* written again last: its presence marks a complete prep */
    }
    for (int i = 0; !rc && i < o->n_inputs; i++) rc = prep_file(&c, m.tok, o->inputs[i], &doc, err);
    if (rc > 0) rc = 0; /* limit reached */
    if (!rc) {
        dms_pack_stats ps;
        rc = dms_packer_finish(c.pk, &ps, err);
        c.pk = NULL;
        st->rows = ps.rows;
        st->shards = ps.shards;
        st->kept[0] = ps.kept[0];
        st->kept[1] = ps.kept[1];
    }
    if (!rc && st->documents == 0)
        rc = dms_errf(err, "%s: no documents in the input%s", o->inputs[0], st->skipped ? " (every line was skipped)" : "");
    if (!rc) {
        remove_stale(o->output, st->shards);
        st->seconds = now_s() - t0;
        rc = write_prep_json(o, st, err);
    }
    dms_packer_abort(c.pk);
    dms_prep_doc_free(&doc);
    dms_model_free(&m);
    return rc;
}
