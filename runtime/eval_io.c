/* eval_io.c - the files of an evaluation (eval.h): input JSONL read with
 * FILE:LINE errors, the per-item log that makes a run resumable (read back
 * on start, a line cut short by a kill dropped, appended and flushed one
 * item at a time, every line stamped with the run's configuration
 * fingerprint so that a changed configuration never mixes into old
 * items), the result document written atomically, and the listing of the
 * results in a folder for `dms eval --summary` and `dms inspect`. */
#include "runtime/eval.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/mapped_file.h"

static int rows_push(dms_eval_rows *r, cJSON *o, int line) {
    if (r->n == r->cap) {
        const int cap = r->cap ? r->cap * 2 : 64;
        cJSON **rows = realloc(r->rows, sizeof(cJSON *) * (size_t)cap);
        if (rows) r->rows = rows;
        int *lines = realloc(r->line, sizeof(int) * (size_t)cap);
        if (lines) r->line = lines;
        if (!rows || !lines) return -1;
        r->cap = cap;
    }
    r->rows[r->n] = o;
    r->line[r->n++] = line;
    return 0;
}

void dms_eval_rows_free(dms_eval_rows *r) {
    for (int i = 0; i < r->n; i++) cJSON_Delete(r->rows[i]);
    free(r->rows);
    free(r->line);
    memset(r, 0, sizeof *r);
}

/* Parses the lines of text[0..len) into r; a last line without its newline
 * is left out when `cut` (its offset in *cut_at). */
static int parse_lines(const char *path, char *text, size_t len, dms_eval_rows *r, int cut, size_t *cut_at,
                       dms_err *err) {
    int line = 0;
    if (cut_at) *cut_at = len;
    for (size_t at = 0; at < len;) {
        char *nl = memchr(text + at, '\n', len - at);
        line++;
        if (!nl && cut) { /* a partial last line (the writer was killed mid-line) */
            *cut_at = at;
            break;
        }
        const size_t end = nl ? (size_t)(nl - text) : len;
        text[end] = '\0';
        const char *s = text + at;
        at = end + 1;
        while (*s == ' ' || *s == '\t' || *s == '\r') s++;
        if (!*s) continue;
        const char *rest = NULL;
        cJSON *o = cJSON_ParseWithOpts(s, &rest, 0);
        if (o && rest) {
            while (*rest == ' ' || *rest == '\t' || *rest == '\r') rest++;
            if (*rest) {
                cJSON_Delete(o);
                return dms_errf(err, "%s:%d: not valid JSON (text after the value; one JSON object per line)", path,
                                line);
            }
        }
        if (!o) return dms_errf(err, "%s:%d: not valid JSON", path, line);
        if (!cJSON_IsObject(o)) {
            cJSON_Delete(o);
            return dms_errf(err, "%s:%d: expected a JSON object", path, line);
        }
        if (rows_push(r, o, line) != 0) {
            cJSON_Delete(o);
            return dms_errf(err, "out of memory");
        }
    }
    return 0;
}

int dms_eval_read_jsonl(const char *path, dms_eval_rows *out, dms_err *err) {
    memset(out, 0, sizeof *out);
    size_t len = 0;
    char *text = dms_read_text_file(path, &len, err);
    if (!text) return -1;
    const int rc = parse_lines(path, text, len, out, 0, NULL, err);
    free(text);
    if (rc != 0) dms_eval_rows_free(out);
    return rc;
}

const char *dms_eval_row_str(dms_eval_rows *r, int i, const char *path, const char *name, dms_err *err) {
    cJSON *o = r->rows[i];
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (cJSON_IsString(v) && v->valuestring) return v->valuestring;
    if (cJSON_IsNumber(v)) { /* e.g. an integer answer: kept as its text */
        char buf[64];
        const double d = v->valuedouble;
        if (d == floor(d) && fabs(d) < 9e15) snprintf(buf, sizeof buf, "%lld", (long long)d);
        else snprintf(buf, sizeof buf, "%.17g", d);
        cJSON *s = cJSON_CreateString(buf);
        if (!s || !cJSON_ReplaceItemInObjectCaseSensitive(o, name, s)) {
            cJSON_Delete(s);
            dms_errf(err, "out of memory");
            return NULL;
        }
        return s->valuestring;
    }
    dms_errf(err, "%s:%d: missing field '%s'%s", path, r->line[i], name, v ? " (not a string)" : "");
    return NULL;
}

/* ---- the item log ---- */

int dms_eval_log_open(dms_eval_log *lg, const char *path, const char *fp, dms_err *err) {
    memset(lg, 0, sizeof *lg);
    lg->path = strdup(path);
    if (!lg->path) return dms_errf(err, "out of memory");
    if (access(path, F_OK) == 0) {
        size_t len = 0, keep = 0;
        char *text = dms_read_text_file(path, &len, err);
        if (!text) return -1;
        int rc = parse_lines(path, text, len, &lg->rows, 1, &keep, err);
        free(text);
        if (rc == 0 && keep < len && truncate(path, (off_t)keep) != 0)
            rc = dms_errf(err, "%s: cannot drop its unfinished last line: %s", path, strerror(errno));
        for (int i = 0; rc == 0 && i < lg->rows.n; i++) {
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(lg->rows.rows[i], "fingerprint");
            if (!cJSON_IsString(f) || strcmp(f->valuestring, fp))
                rc = dms_errf(err,
                              "%s:%d: written by a run with another configuration (fingerprint %s, this run %s); "
                              "use another --tag or --out, or delete the file",
                              path, lg->rows.line[i], cJSON_IsString(f) ? f->valuestring : "none", fp);
        }
        if (rc != 0) {
            dms_eval_log_close(lg);
            return -1;
        }
    }
    lg->f = fopen(path, "a");
    if (!lg->f) {
        dms_errf(err, "%s: cannot open for writing: %s", path, strerror(errno));
        dms_eval_log_close(lg);
        return -1;
    }
    return 0;
}

int dms_eval_log_has(const dms_eval_log *lg, const char *key) {
    for (int i = 0; i < lg->rows.n; i++) {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(lg->rows.rows[i], "key");
        if (cJSON_IsString(k) && !strcmp(k->valuestring, key)) return 1;
    }
    return 0;
}

int dms_eval_log_append(dms_eval_log *lg, cJSON *rec, dms_err *err) {
    char *line = cJSON_PrintUnformatted(rec);
    if (!line) {
        cJSON_Delete(rec);
        return dms_errf(err, "out of memory");
    }
    const int bad = fprintf(lg->f, "%s\n", line) < 0 || fflush(lg->f) != 0;
    free(line);
    if (bad) {
        cJSON_Delete(rec);
        return dms_errf(err, "%s: write failed: %s", lg->path, strerror(errno));
    }
    if (rows_push(&lg->rows, rec, lg->rows.n + 1) != 0) {
        cJSON_Delete(rec);
        return dms_errf(err, "out of memory");
    }
    return 0;
}

void dms_eval_log_close(dms_eval_log *lg) {
    if (lg->f) fclose(lg->f);
    dms_eval_rows_free(&lg->rows);
    free(lg->path);
    memset(lg, 0, sizeof *lg);
}

/* ---- results in a folder ---- */

double dms_eval_num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const char *str_of(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static int by_task_policy_cr(const void *a, const void *b) {
    const cJSON *x = *(cJSON *const *)a, *y = *(cJSON *const *)b;
    int c = strcmp(str_of(x, "task"), str_of(y, "task"));
    if (!c) c = strcmp(str_of(x, "policy"), str_of(y, "policy"));
    if (!c) {
        const double u = dms_eval_num(cJSON_GetObjectItemCaseSensitive(x, "kv"), "kv_cr"),
                     v = dms_eval_num(cJSON_GetObjectItemCaseSensitive(y, "kv"), "kv_cr");
        c = (u > v) - (u < v);
    }
    if (!c) c = strcmp(str_of(x, "tag"), str_of(y, "tag"));
    return c;
}

int dms_eval_list_results(const char *dir, cJSON ***docs, int *n, dms_err *err) {
    *docs = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return dms_errf(err, "%s: cannot open folder: %s", dir, strerror(errno));
    int cap = 0, rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d));) {
        const size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".json")) continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        dms_err ignore = {0};
        char *text = dms_read_text_file(path, NULL, &ignore);
        cJSON *o = text ? cJSON_Parse(text) : NULL;
        free(text);
        if (!cJSON_IsObject(o) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "task")) ||
            !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "policy")) ||
            !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(o, "metric"))) {
            cJSON_Delete(o); /* not an eval result (a config, a DMS model's files, ...) */
            continue;
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            cJSON **nd = realloc(*docs, sizeof(cJSON *) * (size_t)cap);
            if (!nd) {
                cJSON_Delete(o);
                rc = dms_errf(err, "out of memory");
                break;
            }
            *docs = nd;
        }
        (*docs)[(*n)++] = o;
    }
    closedir(d);
    if (rc != 0) {
        dms_eval_free_results(*docs, *n);
        *docs = NULL;
        *n = 0;
        return -1;
    }
    if (*n > 1) qsort(*docs, (size_t)*n, sizeof(cJSON *), by_task_policy_cr);
    return 0;
}

void dms_eval_free_results(cJSON **docs, int n) {
    for (int i = 0; i < n; i++) cJSON_Delete(docs[i]);
    free(docs);
}
