/* eval_report.h - how `dms eval` results are shown: the one-line result of
 * a run, the table of a folder of results (`dms eval --summary DIR`,
 * cli/eval_summary.c) and their plots against KV CR (`dms inspect DIR`,
 * cli/inspect_eval.c). */
#ifndef DMS_EVAL_REPORT_H
#define DMS_EVAL_REPORT_H

#include <cjson/cJSON.h>
#include <stdio.h>

/* One line: task, policy, budget, metric +- se, KV CR, throughput. */
void dms_eval_print_result(const cJSON *doc, FILE *f);
/* The table of every result in dir; exit code. */
int dms_eval_summary(const char *dir);
/* Whether dir holds at least one eval result document. */
int dms_eval_dir_has_results(const char *dir);
/* Plots dir/plots/<task>.png (metric against KV CR, one line per policy);
 * exit code. */
int dms_inspect_eval(const char *dir);
/* The budget column: "128", "128 (match)", "64 (cr 4)", "cr 4" (one per
 * niah length), or "-". */
void dms_eval_budget_label(const cJSON *doc, char *buf, size_t n);
/* The model's short name (the last path component). */
const char *dms_eval_model_name(const cJSON *doc);

#endif
