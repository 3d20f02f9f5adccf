/* eval_summary.c - printing `dms eval` results (eval_report.h): the line a
 * run ends with, and `dms eval --summary DIR`, one row per result: task,
 * model, policy, budget, KV CR, metric +- standard error. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli/eval_report.h"
#include "runtime/eval.h"

static const char *str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}
static const cJSON *obj(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

const char *dms_eval_model_name(const cJSON *doc) {
    static char buf[256];
    snprintf(buf, sizeof buf, "%s", str(doc, "model"));
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = '\0';
    const char *slash = strrchr(buf, '/');
    return slash ? slash + 1 : buf;
}

void dms_eval_budget_label(const cJSON *doc, char *buf, size_t n) {
    const char *rule = str(doc, "budget_rule");
    const double b = dms_eval_num(doc, "budget");
    const double cr = dms_eval_num(obj(doc, "config"), "cr");
    if (!strcmp(rule, "match") && !isnan(b)) snprintf(buf, n, "%.0f (match)", b);
    else if (!strcmp(rule, "cr") && !isnan(b) && !isnan(cr)) snprintf(buf, n, "%.0f (cr %g)", b, cr);
    else if (!isnan(b)) snprintf(buf, n, "%.0f", b);
    else if (!strcmp(rule, "cr") && !isnan(cr)) snprintf(buf, n, "cr %g", cr);
    else if (!strcmp(rule, "match-lanes")) snprintf(buf, n, "lanes (match)");
    else snprintf(buf, n, "-");
}

void dms_eval_print_result(const cJSON *doc, FILE *f) {
    const cJSON *m = obj(doc, "metric"), *kv = obj(doc, "kv"), *ms = obj(doc, "metrics"), *t = obj(doc, "throughput");
    char budget[64];
    dms_eval_budget_label(doc, budget, sizeof budget);
    fprintf(f, "%s %s (budget %s): %s %.4g +- %.2g", str(doc, "task"), str(doc, "policy"), budget, str(m, "name"),
            dms_eval_num(m, "value"), dms_eval_num(m, "se"));
    if (!strcmp(str(doc, "task"), "kl"))
        fprintf(f, " nats/token, ppl %.3f (vanilla %.3f), %g windows", dms_eval_num(ms, "ppl"),
                dms_eval_num(ms, "ref_ppl"), dms_eval_num(ms, "windows"));
    else if (!isnan(dms_eval_num(ms, "out_of_tokens")))
        fprintf(f, " over %g units, %g samples (%g out of tokens)", dms_eval_num(m, "n"), dms_eval_num(ms, "samples"),
                dms_eval_num(ms, "out_of_tokens"));
    else fprintf(f, " over %g prompts", dms_eval_num(m, "n"));
    if (!isnan(dms_eval_num(ms, "needle_lanes"))) /* niah: the needle's code when the question was read */
        fprintf(f, ", code held by %.1f%% of lanes (%.1f%% of lane-token pairs)", 100 * dms_eval_num(ms, "needle_lanes"),
                100 * dms_eval_num(ms, "needle_held"));
    /* kl: live tokens after every token (what --match reads); else the runtime's per-call mean */
    const double held = !isnan(dms_eval_num(kv, "held_avg")) ? dms_eval_num(kv, "held_avg")
                                                              : dms_eval_num(kv, "held_time_mean");
    fprintf(f, " | KV CR %.2f (at the end %.2f, decision CR %.2f), held per (layer, head) %.1f mean %.1f peak, "
               "%.0f KV reads/token | %.1f tok/s\n",
            dms_eval_num(kv, "kv_cr"), dms_eval_num(kv, "kv_cr_end"), dms_eval_num(kv, "decision_cr"), held,
            dms_eval_num(kv, "held_peak"), dms_eval_num(kv, "reads_per_token"), dms_eval_num(t, "tok_s"));
}

int dms_eval_summary(const char *dir) {
    cJSON **docs;
    int n;
    dms_err err = {0};
    if (dms_eval_list_results(dir, &docs, &n, &err) != 0) {
        fprintf(stderr, "dms eval: %s\n", err.msg);
        return 1;
    }
    if (n == 0) {
        fprintf(stderr, "dms eval: %s: no eval results (*.json written by dms eval)\n", dir);
        return 1;
    }
    printf("%-5s %-24s %-7s %-14s %7s  %-26s %-9s %s\n", "task", "model", "policy", "budget", "KV CR", "metric +- se",
           "items", "tag");
    for (int i = 0; i < n; i++) {
        const cJSON *d = docs[i], *m = obj(d, "metric");
        char budget[64], metric[64], items[32];
        dms_eval_budget_label(d, budget, sizeof budget);
        snprintf(metric, sizeof metric, "%s %.4g +- %.2g", str(m, "name"), dms_eval_num(m, "value"),
                 dms_eval_num(m, "se"));
        snprintf(items, sizeof items, "%g/%g%s", dms_eval_num(d, "items_done"), dms_eval_num(d, "items_total"),
                 cJSON_IsTrue(obj(d, "complete")) ? "" : "*");
        printf("%-5s %-24.24s %-7s %-14s %7.2f  %-26s %-9s %s\n", str(d, "task"), dms_eval_model_name(d),
               str(d, "policy"), budget, dms_eval_num(obj(d, "kv"), "kv_cr"), metric, items, str(d, "tag"));
    }
    printf("(KV CR: vanilla / policy live tokens, time-averaged: over every compared token for kl, over the KV\n"
           " entries read per generated token otherwise; * = run not complete)\n");
    dms_eval_free_results(docs, n);
    return 0;
}
