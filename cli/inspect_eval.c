/* inspect_eval.c - `dms inspect DIR` on a folder of `dms eval` results:
 * one PNG per task (DIR/plots/<task>.png) with the metric (KL, accuracy,
 * pass@1) and its standard error against the KV CR, one line per policy
 * across every model in the folder (the checkpoints of one retrofit at
 * several CRs make one DMS line; the baselines, measured on each, one line
 * each), drawn by gnuplot as inspect_run.c draws training runs. Results
 * of one task on more than one text (--data) make one line per policy and
 * text, so that a line never joins points measured on different texts. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/eval_report.h"
#include "core/fs.h"
#include "runtime/eval.h"

static const char *str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

int dms_eval_dir_has_results(const char *dir) {
    if (!dms_is_dir(dir)) return 0;
    cJSON **docs;
    int n;
    if (dms_eval_list_results(dir, &docs, &n, NULL) != 0) return 0;
    dms_eval_free_results(docs, n);
    return n > 0;
}

/* The text a result was measured on: the file name of its --data ("" when
 * the task makes its own prompts). */
static const char *data_name(const cJSON *d) {
    const char *p = str(cJSON_GetObjectItemCaseSensitive(d, "config"), "data");
    const char *slash = strrchr(p, '/');
    return slash ? slash + 1 : p;
}

/* The line a result belongs to: its policy ("h2o, DMS lanes" for a
 * baseline given a budget per lane shaped like DMS's, --by-lane), and with
 * by_text the text it was measured on ("h2o, GPL-3"). */
static void line_name(const cJSON *d, int by_text, char *buf, size_t n) {
    snprintf(buf, n, "%s%s%s%.60s", str(d, "policy"), !strcmp(str(d, "budget_rule"), "match-lanes") ? ", DMS lanes" : "",
             by_text ? ", " : "", by_text ? data_name(d) : "");
}

int dms_inspect_eval(const char *dir) {
    cJSON **docs;
    int n;
    dms_err err = {0};
    if (dms_eval_list_results(dir, &docs, &n, &err) != 0) {
        fprintf(stderr, "dms inspect: %s\n", err.msg);
        return 1;
    }
    char plots[PATH_MAX];
    snprintf(plots, sizeof plots, "%s/plots", dir);
    if (n == 0 || dms_mkdir_p(plots, &err) != 0) {
        fprintf(stderr, "dms inspect: %s\n", n == 0 ? "no eval results in the folder" : err.msg);
        dms_eval_free_results(docs, n);
        return 1;
    }
    FILE *gp = popen("gnuplot 2>&1", "w");
    if (!gp) {
        fprintf(stderr, "dms inspect: cannot run gnuplot (Debian: gnuplot-nox)\n");
        dms_eval_free_results(docs, n);
        return 1;
    }
    fprintf(gp, "set terminal pngcairo size 900,550 font ',10' noenhanced\nset grid\nset key outside right\n"
                "set xlabel 'KV CR (vanilla / policy live tokens, time-averaged)'\n");
    int rc = 0, written = 0;
    printf("results:       %s (%d)\n", dir, n);
    static const int points[8] = {7, 5, 9, 11, 13, 15, 3, 1}; /* filled circle, square, triangles, ... per text */
    for (int i = 0; i < n && rc == 0;) { /* docs are sorted by task, then policy */
        const char *task = str(docs[i], "task");
        int j = i;
        while (j < n && !strcmp(str(docs[j], "task"), task)) j++;
        int models = 1, by_text = 0; /* distinct models among docs[i..j); more than one text? */
        for (int k = i + 1; k < j; k++) {
            int seen = 0;
            for (int q = i; q < k && !seen; q++) seen = !strcmp(str(docs[q], "model"), str(docs[k], "model"));
            models += !seen;
            by_text |= strcmp(data_name(docs[i]), data_name(docs[k])) != 0;
        }
        /* one data block per line, separated by two blank lines (gnuplot's index) */
        char dat[PATH_MAX + 64];
        snprintf(dat, sizeof dat, "%s/%.40s.dat", plots, task);
        FILE *f = fopen(dat, "w");
        if (!f) {
            fprintf(stderr, "dms inspect: %s: cannot write\n", dat);
            rc = 1;
            break;
        }
        /* a line's colour is its policy's, its dash and point its text's */
        char names[64][96], policies[64][96], texts[8][64];
        int blocks = 0, npolicies = 0, ntexts = 0, colour[64], dash[64];
        for (int k = i; k < j; k++) {
            char name[96];
            line_name(docs[k], by_text, name, sizeof name);
            int b = 0;
            while (b < blocks && strcmp(names[b], name)) b++;
            if (b < blocks || blocks == 64) continue;
            snprintf(names[blocks], sizeof names[0], "%s", name);
            line_name(docs[k], 0, name, sizeof name);
            int p = 0, t = 0;
            while (p < npolicies && strcmp(policies[p], name)) p++;
            if (p == npolicies) snprintf(policies[npolicies++], sizeof policies[0], "%s", name);
            while (t < ntexts && strncmp(texts[t], data_name(docs[k]), sizeof texts[0] - 1)) t++; /* as stored */
            if (t == ntexts && ntexts < 8) snprintf(texts[ntexts++], sizeof texts[0], "%s", data_name(docs[k]));
            colour[blocks] = p + 1;
            dash[blocks++] = t < 8 ? t + 1 : 8;
        }
        for (int b = 0; b < blocks; b++) {
            fprintf(f, "# %s\n", names[b]);
            for (int k = i; k < j; k++) { /* sorted by KV CR within a policy */
                char name[96];
                line_name(docs[k], by_text, name, sizeof name);
                if (strcmp(name, names[b])) continue;
                const cJSON *m = cJSON_GetObjectItemCaseSensitive(docs[k], "metric");
                fprintf(f, "%.6g %.6g %.6g\n", dms_eval_num(cJSON_GetObjectItemCaseSensitive(docs[k], "kv"), "kv_cr"),
                        dms_eval_num(m, "value"), dms_eval_num(m, "se"));
            }
            fprintf(f, "\n\n");
        }
        fclose(f);
        const char *metric = str(cJSON_GetObjectItemCaseSensitive(docs[i], "metric"), "name");
        char who[128];
        if (models == 1) snprintf(who, sizeof who, "%s", dms_eval_model_name(docs[i]));
        else snprintf(who, sizeof who, "%d models", models);
        fprintf(gp, "set output '%s/%s.png'\nset title '%s: %s against KV CR (%s)'\nset ylabel '%s%s'\n", plots, task,
                task, metric, who, metric, !strcmp(task, "kl") ? " (nats per token)" : "");
        fprintf(gp, "plot ");
        for (int b = 0; b < blocks; b++)
            fprintf(gp, "%s'%s' index %d using 1:2:3 with yerrorlines lw 2 lc %d dt %d pt %d title '%s'", b ? ", " : "",
                    dat, b, colour[b], dash[b], points[dash[b] - 1], names[b]);
        fprintf(gp, "\n");
        printf("plot:          %s/%s.png (%d results from %d model(s), %d lines)\n", plots, task, j - i, models, blocks);
        written++;
        i = j;
    }
    const int prc = pclose(gp);
    if (rc == 0 && prc != 0) {
        fprintf(stderr, "dms inspect: gnuplot failed (exit %d) writing plots in %s\n", prc, plots);
        rc = 1;
    }
    dms_eval_free_results(docs, n);
    return rc;
}
