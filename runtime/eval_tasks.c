/* eval_tasks.c - what differs between the tasks of `dms eval` (eval.h):
 * their names and flag defaults, the checks of a configuration, reading
 * and checking their input files before a model is loaded (FILE:LINE
 * errors naming the missing field), and turning the item rows of a run
 * into its aggregate: the metric with its standard error (windows,
 * problems or questions as the independent units), per-cell tables, and
 * the KV statistics every task reports. */
#include "runtime/eval.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mapped_file.h"

static const char *const task_names[] = {"kl", "niah", "aime", "gpqa"};

int dms_eval_task_from_name(const char *name) {
    for (int i = 0; i < (int)(sizeof task_names / sizeof task_names[0]); i++)
        if (name && !strcmp(name, task_names[i])) return i;
    return -1;
}
const char *dms_eval_task_name(dms_eval_task t) { return task_names[t]; }

void dms_eval_config_default(dms_eval_config *c) {
    memset(c, 0, sizeof *c);
    c->task = DMS_EVAL_KL;
    c->out_dir = "runs/eval";
    c->backend_name = "cpu";
    dms_kv_opts_default(&c->kv);
    c->kv.policy = DMS_POLICY_FULL;
    c->kv.budget = -1; /* unset */
    c->cr = NAN;       /* unset */
    c->window_tokens = 512;
    c->chunk = 32;
    static const int lengths[] = {256, 512, 1024, 2048}, depths[] = {0, 25, 50, 75, 100};
    c->n_lengths = 4;
    memcpy(c->lengths, lengths, sizeof lengths);
    c->n_depths = 5;
    memcpy(c->depths, depths, sizeof depths);
    c->samples = -1;
    c->batch = 4;
    c->max_tokens = -1;
    c->sampling = (dms_eval_sampling){-1, -1, -1, -1};
    c->seed = 1234;
}

int dms_eval_config_finish(dms_eval_config *c, dms_err *err) {
    const int gen = c->task != DMS_EVAL_KL, niah = c->task == DMS_EVAL_NIAH;
    if (c->samples < 0) c->samples = c->task == DMS_EVAL_GPQA ? 1 : 4;
    if (c->max_tokens < 0) c->max_tokens = niah ? 24 : 32000;
    if (c->sampling.temperature < 0) c->sampling.temperature = niah ? 0.0f : 0.6f;
    if (c->sampling.top_p < 0) c->sampling.top_p = niah ? 1.0f : 0.95f;
    if (c->sampling.top_k < 0) c->sampling.top_k = niah ? 0 : 20;
    if (c->sampling.min_p < 0) c->sampling.min_p = 0.0f;

    const dms_policy p = c->kv.policy;
    const int budgeted = p != DMS_POLICY_DMS && p != DMS_POLICY_FULL;
    const int has_budget = c->kv.budget != -1, has_cr = !isnan(c->cr), has_match = c->match != NULL;
    if (has_cr && !(c->cr >= 1)) return dms_errf(err, "--cr must be at least 1 (got %g)", c->cr);
    if (has_budget && c->kv.budget < 1) return dms_errf(err, "--budget must be at least 1 (got %d)", c->kv.budget);
    if (!budgeted && (has_budget || has_cr || has_match))
        return dms_errf(err, "--%s does not apply to policy %s (it keeps %s); use window, sinks, tova or h2o",
                        has_budget ? "budget" : has_cr ? "cr" : "match", dms_policy_name(p),
                        p == DMS_POLICY_DMS ? "what the model's heads decide" : "every token");
    if (budgeted && has_budget + has_cr + has_match != 1)
        return dms_errf(err, "policy %s needs exactly one of --budget N, --cr X, --match RESULT.json",
                        dms_policy_name(p));
    if (has_match && c->task != DMS_EVAL_KL) return dms_errf(err, "--match applies to --task kl only");
    if (!isnan(c->kv.dms_offset) && (p != DMS_POLICY_DMS || !isfinite(c->kv.dms_offset)))
        return dms_errf(err, "--dms-offset applies to policy dms only and must be a finite number");
    if (c->by_lane && !has_match) return dms_errf(err, "--by-lane needs --match RESULT.json");
    if (c->reference && c->task != DMS_EVAL_KL) return dms_errf(err, "--reference applies to --task kl only");
    if (niah && c->data) return dms_errf(err, "--task niah makes its own haystacks; --data is not used");
    if (!niah && !c->data) return dms_errf(err, "--task %s needs --data FILE", dms_eval_task_name(c->task));
    if (c->task == DMS_EVAL_KL && c->window_tokens < 512)
        return dms_errf(err, "--window-tokens must be at least 512 (got %d): shorter windows never get past the "
                             "budgets and DMS windows being compared (docs/eval.md)", c->window_tokens);
    if (c->chunk < 1 || c->batch < 1 || c->samples < 1 || c->max_tokens < 1 || c->limit < 0 || c->windows < 0)
        return dms_errf(err, "need --chunk, --batch, --samples, --max-tokens >= 1 and --limit, --windows >= 0");
    if (gen && (c->sampling.temperature < 0 || !(c->sampling.top_p > 0 && c->sampling.top_p <= 1) ||
                c->sampling.min_p >= 1))
        return dms_errf(err, "need --temperature >= 0, 0 < --top-p <= 1, 0 <= --min-p < 1");
    for (int i = 0; niah && i < c->n_lengths; i++)
        if (c->lengths[i] < 16) return dms_errf(err, "--lengths: %d is too short (at least 16 tokens)", c->lengths[i]);
    for (int i = 0; niah && i < c->n_depths; i++)
        if (c->depths[i] < 0 || c->depths[i] > 100)
            return dms_errf(err, "--depths: %d is outside 0..100 (percent)", c->depths[i]);
    return 0;
}

/* ---- input files ---- */

static int ends_with(const char *s, const char *suffix) {
    const size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static const char *const gpqa_fields[] = {"Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
                                          "Incorrect Answer 3"};

int dms_eval_data_read(const dms_eval_config *c, dms_eval_data *d, dms_err *err) {
    memset(d, 0, sizeof *d);
    if (c->task == DMS_EVAL_NIAH) return 0;
    if (c->task == DMS_EVAL_KL && !ends_with(c->data, ".jsonl")) { /* plain text */
        d->text = dms_read_text_file(c->data, &d->text_len, err);
        if (!d->text) return -1;
        if (d->text_len == 0) {
            dms_eval_data_free(d);
            return dms_errf(err, "%s: empty file", c->data);
        }
        return 0;
    }
    if (dms_eval_read_jsonl(c->data, &d->rows, err) != 0) return -1;
    if (d->rows.n == 0) {
        dms_eval_data_free(d);
        return dms_errf(err, "%s: no items (an empty JSONL file)", c->data);
    }
    int rc = 0;
    size_t total = 0;
    for (int i = 0; rc == 0 && i < d->rows.n; i++) {
        if (c->task == DMS_EVAL_KL) {
            const char *t = dms_eval_row_str(&d->rows, i, c->data, "text", err);
            if (!t) rc = -1;
            else total += strlen(t) + 2;
        } else if (c->task == DMS_EVAL_AIME) {
            /* "problem", or "question" as opencompass/AIME2025 names it */
            const cJSON *o = d->rows.rows[i];
            const char *q = dms_eval_row_str(&d->rows, i, c->data,
                                             cJSON_GetObjectItemCaseSensitive(o, "problem") ||
                                                     !cJSON_GetObjectItemCaseSensitive(o, "question")
                                                 ? "problem"
                                                 : "question",
                                             err);
            const char *a = q ? dms_eval_row_str(&d->rows, i, c->data, "answer", err) : NULL;
            long long v;
            if (!q || !a) rc = -1;
            else if (dms_eval_parse_int(a, &v) != 0)
                rc = dms_errf(err, "%s:%d: answer '%s' is not an integer", c->data, d->rows.line[i], a);
        } else {
            for (size_t k = 0; rc == 0 && k < sizeof gpqa_fields / sizeof gpqa_fields[0]; k++)
                if (!dms_eval_row_str(&d->rows, i, c->data, gpqa_fields[k], err)) rc = -1;
        }
    }
    if (rc == 0 && c->task == DMS_EVAL_KL) { /* the documents, one after another */
        d->text = malloc(total + 1);
        if (!d->text) rc = dms_errf(err, "out of memory");
        for (int i = 0; rc == 0 && i < d->rows.n; i++) {
            const char *t = cJSON_GetObjectItemCaseSensitive(d->rows.rows[i], "text")->valuestring;
            const size_t l = strlen(t);
            if (i) {
                memcpy(d->text + d->text_len, "\n\n", 2);
                d->text_len += 2;
            }
            memcpy(d->text + d->text_len, t, l);
            d->text_len += l;
        }
        if (d->text) d->text[d->text_len] = '\0';
    }
    if (rc != 0) dms_eval_data_free(d);
    return rc;
}

void dms_eval_data_free(dms_eval_data *d) {
    dms_eval_rows_free(&d->rows);
    free(d->text);
    memset(d, 0, sizeof *d);
}

/* ---- records and aggregates ---- */

void dms_eval_add_kv(cJSON *rec, const dms_kv_stats *kv) {
    cJSON *o = cJSON_AddObjectToObject(rec, "kv");
    cJSON_AddNumberToObject(o, "seen", (double)kv->seen);
    cJSON_AddNumberToObject(o, "held_mean", kv->held_mean);
    cJSON_AddNumberToObject(o, "held_time_mean", kv->held_time_mean);
    cJSON_AddNumberToObject(o, "held_peak", kv->held_peak);
    cJSON_AddNumberToObject(o, "kv_cr", kv->kv_cr);
    cJSON_AddNumberToObject(o, "decision_cr", kv->decision_cr);
    cJSON_AddNumberToObject(o, "bytes_held", (double)kv->bytes_held);
    cJSON_AddNumberToObject(o, "bytes_vanilla", (double)kv->bytes_vanilla);
}

static double fnum(const cJSON *o, const char *k) { return dms_eval_num(o, k); }
static double knum(const cJSON *rec, const char *k) {
    return dms_eval_num(cJSON_GetObjectItemCaseSensitive(rec, "kv"), k);
}
static int fbool(const cJSON *o, const char *k) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k)); }

static void set_metric(cJSON *result, const char *name, double value, double se, int n) {
    cJSON *m = cJSON_AddObjectToObject(result, "metric");
    cJSON_AddStringToObject(m, "name", name);
    cJSON_AddNumberToObject(m, "value", value);
    cJSON_AddNumberToObject(m, "se", se);
    cJSON_AddNumberToObject(m, "n", n);
}

/* An integer field of a record (an index, a length): -1 when it is
 * missing, not an integer or beyond an int, so that a damaged item log
 * never becomes an out-of-range conversion or a huge allocation. */
static int fint(const cJSON *o, const char *k) {
    const double v = fnum(o, k);
    return v >= 0 && v <= INT_MAX && v == floor(v) ? (int)v : -1;
}

typedef struct {
    int g;
    double v;
} group_val;

static int cmp_group(const void *a, const void *b) {
    const int x = ((const group_val *)a)->g, y = ((const group_val *)b)->g;
    return (x > y) - (x < y);
}

/* The per-unit means of 0/1 (or any) values grouped by an integer field:
 * mean over units (in increasing unit order), its standard error, and the
 * number of units. Rows without a valid unit are left out. */
static int grouped(cJSON *const *rows, int n, const char *group, const char *value, double *mean, double *se,
                   int *units) {
    group_val *x = malloc(sizeof(group_val) * (size_t)(n ? n : 1));
    double *per = malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!x || !per) {
        free(x);
        free(per);
        return -1;
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        const int g = fint(rows[i], group);
        if (g >= 0) x[m++] = (group_val){g, fbool(rows[i], value) ? 1.0 : 0.0};
    }
    qsort(x, (size_t)m, sizeof *x, cmp_group);
    int u = 0;
    for (int i = 0; i < m;) {
        int j = i;
        double sum = 0;
        while (j < m && x[j].g == x[i].g) sum += x[j++].v;
        per[u++] = sum / (j - i);
        i = j;
    }
    dms_eval_mean_se(per, u, mean, se);
    *units = u;
    free(x);
    free(per);
    return 0;
}

static void aggregate_kv(dms_eval_task task, cJSON *const *rows, int n, cJSON *result) {
    double seen = 0, held = 0, held_t = 0, peak = 0, dcr = 0, reads = 0, reads_v = 0, steps = 0, held_avg = 0,
           held_avg_v = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *r = rows[i];
        seen += knum(r, "seen");
        held += knum(r, "held_mean");
        held_t += knum(r, "held_time_mean");
        if (knum(r, "held_peak") > peak) peak = knum(r, "held_peak");
        dcr += knum(r, "decision_cr");
        reads += fnum(r, "kv_reads");
        reads_v += fnum(r, "kv_reads_vanilla");
        steps += task == DMS_EVAL_KL ? fnum(r, "tokens") : fnum(r, "decode_steps");
        if (task == DMS_EVAL_KL) {
            held_avg += fnum(r, "held_avg");
            held_avg_v += fnum(r, "held_avg_vanilla");
        }
    }
    cJSON *kv = cJSON_AddObjectToObject(result, "kv");
    /* the headline CR: vanilla over policy, time-averaged over every token
     * compared (kl) or every decode step's reads (generation) */
    const double cr = task == DMS_EVAL_KL ? (held_avg > 0 ? held_avg_v / held_avg : 0) : (reads > 0 ? reads_v / reads : 0);
    cJSON_AddNumberToObject(kv, "kv_cr", cr);
    cJSON_AddNumberToObject(kv, "kv_cr_end", held > 0 ? seen / held : 0);
    cJSON_AddNumberToObject(kv, "decision_cr", n ? dcr / n : 0);
    cJSON_AddNumberToObject(kv, "tokens_seen", seen);
    cJSON_AddNumberToObject(kv, "held_mean", n ? held / n : 0);
    cJSON_AddNumberToObject(kv, "held_time_mean", n ? held_t / n : 0);
    cJSON_AddNumberToObject(kv, "held_peak", peak);
    if (task == DMS_EVAL_KL) {
        cJSON_AddNumberToObject(kv, "held_avg", n ? held_avg / n : 0);
        cJSON_AddNumberToObject(kv, "held_avg_vanilla", n ? held_avg_v / n : 0);
    }
    cJSON_AddNumberToObject(kv, "reads_per_token", steps > 0 ? reads / steps : 0);
    cJSON_AddNumberToObject(kv, "reads_per_token_vanilla", steps > 0 ? reads_v / steps : 0);
}

static int aggregate_kl(cJSON *const *rows, int n, cJSON *result) {
    double *kl = malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!kl) return -1;
    double nll = 0, ref_nll = 0, cnt = 0, kl_max = 0, mean, se;
    for (int i = 0; i < n; i++) {
        kl[i] = fnum(rows[i], "kl");
        const double c = fnum(rows[i], "nll_count");
        nll += fnum(rows[i], "nll") * c;
        ref_nll += fnum(rows[i], "ref_nll") * c;
        cnt += c;
        if (fnum(rows[i], "kl_max") > kl_max) kl_max = fnum(rows[i], "kl_max");
    }
    dms_eval_mean_se(kl, n, &mean, &se);
    free(kl);
    set_metric(result, "kl", mean, se, n);
    cJSON *m = cJSON_AddObjectToObject(result, "metrics");
    cJSON_AddNumberToObject(m, "kl", mean);
    cJSON_AddNumberToObject(m, "kl_se", se);
    cJSON_AddNumberToObject(m, "kl_max", kl_max);
    cJSON_AddNumberToObject(m, "ppl", cnt > 0 ? exp(nll / cnt) : 0);
    cJSON_AddNumberToObject(m, "ref_ppl", cnt > 0 ? exp(ref_nll / cnt) : 0);
    cJSON_AddNumberToObject(m, "windows", n);
    cJSON_AddNumberToObject(m, "tokens_compared", cnt);
    return 0;
}

static int cmp_int(const void *a, const void *b) { return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b); }

/* The needle when the question was read (eval_run.c's records): the mean
 * fraction of lanes holding all its code's tokens ("needle_lanes") and of
 * (lane, code token) pairs held ("needle_held"), over the items of one
 * length and one depth (-1: any) that recorded them, and apart for the
 * found and the missed needles: are misses evictions or retrieval? (A
 * needle still inside the eviction window, as at depth 100, is held
 * everywhere: the cells tell them apart.) Nothing is added without
 * records. */
static void add_needle_stat(cJSON *o, cJSON *const *rows, int n, int length, int depth, const char *key) {
    double sum[3] = {0, 0, 0};
    int cnt[3] = {0, 0, 0};
    for (int i = 0; i < n; i++) {
        const double v = fnum(rows[i], key);
        if (isnan(v) || (length >= 0 && fint(rows[i], "length") != length) ||
            (depth >= 0 && fint(rows[i], "depth") != depth))
            continue;
        const int k = fbool(rows[i], "correct") ? 1 : 2;
        sum[0] += v, cnt[0]++;
        sum[k] += v, cnt[k]++;
    }
    if (!cnt[0]) return;
    static const char *const suffix[3] = {"", "_found", "_missed"};
    for (int k = 0; k < 3; k++) {
        char name[48];
        snprintf(name, sizeof name, "%s%s", key, suffix[k]);
        if (cnt[k]) cJSON_AddNumberToObject(o, name, sum[k] / cnt[k]);
        else cJSON_AddNullToObject(o, name);
    }
}
static void add_needle_lanes(cJSON *o, cJSON *const *rows, int n, int length, int depth) {
    add_needle_stat(o, rows, n, length, depth, "needle_lanes");
    add_needle_stat(o, rows, n, length, depth, "needle_held");
}

static int aggregate_niah(cJSON *const *rows, int n, cJSON *result) {
    double *ok = malloc(sizeof(double) * (size_t)(n ? n : 1));
    int *lens = malloc(sizeof(int) * (size_t)(n ? n : 1)), *deps = malloc(sizeof(int) * (size_t)(n ? n : 1));
    if (!ok || !lens || !deps) {
        free(ok);
        free(lens);
        free(deps);
        return -1;
    }
    int nl = 0, nd = 0;
    for (int i = 0; i < n; i++) {
        ok[i] = fbool(rows[i], "correct");
        const int l = fint(rows[i], "length"), d = fint(rows[i], "depth");
        int seen = 0;
        for (int k = 0; k < nl; k++) seen |= lens[k] == l;
        if (!seen) lens[nl++] = l;
        seen = 0;
        for (int k = 0; k < nd; k++) seen |= deps[k] == d;
        if (!seen) deps[nd++] = d;
    }
    qsort(lens, (size_t)nl, sizeof(int), cmp_int);
    qsort(deps, (size_t)nd, sizeof(int), cmp_int);
    double mean, se;
    dms_eval_mean_se(ok, n, &mean, &se);
    set_metric(result, "accuracy", mean, se, n);
    cJSON *m = cJSON_AddObjectToObject(result, "metrics");
    cJSON_AddNumberToObject(m, "accuracy", mean);
    cJSON_AddNumberToObject(m, "accuracy_se", se);
    add_needle_lanes(m, rows, n, -1, -1);
    cJSON *cells = cJSON_AddArrayToObject(m, "cells");
    cJSON *by_len = cJSON_AddArrayToObject(m, "by_length");
    for (int a = 0; a < nl; a++) {
        int ln = 0, lc = 0;
        for (int b = 0; b < nd; b++) {
            int cn = 0, cc = 0;
            for (int i = 0; i < n; i++)
                if (fint(rows[i], "length") == lens[a] && fint(rows[i], "depth") == deps[b]) {
                    cn++;
                    cc += ok[i] > 0;
                }
            if (!cn) continue;
            cJSON *c = cJSON_CreateObject();
            cJSON_AddNumberToObject(c, "length", lens[a]);
            cJSON_AddNumberToObject(c, "depth", deps[b]);
            cJSON_AddNumberToObject(c, "n", cn);
            cJSON_AddNumberToObject(c, "correct", cc);
            cJSON_AddNumberToObject(c, "accuracy", (double)cc / cn);
            add_needle_lanes(c, rows, n, lens[a], deps[b]);
            cJSON_AddItemToArray(cells, c);
            ln += cn;
            lc += cc;
        }
        cJSON *c = cJSON_CreateObject();
        cJSON_AddNumberToObject(c, "length", lens[a]);
        cJSON_AddNumberToObject(c, "n", ln);
        cJSON_AddNumberToObject(c, "accuracy", ln ? (double)lc / ln : 0);
        add_needle_lanes(c, rows, n, lens[a], -1);
        cJSON_AddItemToArray(by_len, c);
    }
    free(ok);
    free(lens);
    free(deps);
    return 0;
}

static int aggregate_choice(dms_eval_task task, cJSON *const *rows, int n, cJSON *result) {
    const char *unit = task == DMS_EVAL_AIME ? "problem" : "question";
    double mean, se;
    int units;
    if (grouped(rows, n, unit, "correct", &mean, &se, &units) != 0) return -1;
    int limit = 0, answered = 0;
    for (int i = 0; i < n; i++) {
        limit += fbool(rows[i], "hit_limit");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(rows[i], "pred");
        answered += p && !cJSON_IsNull(p);
    }
    const char *name = task == DMS_EVAL_AIME ? "pass@1" : "accuracy";
    set_metric(result, name, mean, se, units);
    cJSON *m = cJSON_AddObjectToObject(result, "metrics");
    cJSON_AddNumberToObject(m, name, mean);
    cJSON_AddNumberToObject(m, "se", se);
    cJSON_AddNumberToObject(m, task == DMS_EVAL_AIME ? "problems" : "questions", units);
    cJSON_AddNumberToObject(m, "samples", n);
    cJSON_AddNumberToObject(m, "answered", answered);
    cJSON_AddNumberToObject(m, "out_of_tokens", limit);
    return 0;
}

int dms_eval_aggregate(dms_eval_task task, cJSON *const *rows, int n, cJSON *result, dms_err *err) {
    int rc;
    switch (task) {
    case DMS_EVAL_KL: rc = aggregate_kl(rows, n, result); break;
    case DMS_EVAL_NIAH: rc = aggregate_niah(rows, n, result); break;
    default: rc = aggregate_choice(task, rows, n, result); break;
    }
    if (rc != 0) return dms_errf(err, "out of memory");
    aggregate_kv(task, rows, n, result);
    return 0;
}
