/* eval_data.c (fuzz target) - the files `dms eval` reads
 * (runtime/eval_io.c, runtime/eval_tasks.c): the task data (aime JSONL with
 * "problem"/"question" and an integer "answer", gpqa JSONL with the five
 * question/answer fields, kl text or JSONL), the per-item log read back on
 * resume (a cut last line dropped, fingerprints checked) and aggregated
 * into the result, and the result documents listed by --summary. Eval data
 * sets are downloaded; a bad row must be "PATH:LINE: problem". The first
 * input byte picks the file kind, the rest is the file. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_common.h"
#include "runtime/eval.h"

static void data_file(dms_eval_task task, const char *name, const uint8_t *data, size_t size) {
    char path[PATH_MAX];
    fuzz_write_file(name, data, size, path, sizeof path);
    dms_eval_config c;
    dms_eval_config_default(&c);
    c.task = task;
    c.data = path;
    dms_eval_data d;
    dms_err err = {{0}};
    int rc = dms_eval_data_read(&c, &d, &err);
    fuzz_check_err(rc, &err, path, "dms_eval_data_read");
    if (rc) return;
    if (task == DMS_EVAL_KL) {
        fuzz_require(d.text != NULL && strlen(d.text) <= d.text_len, "kl text");
    } else {
        for (int i = 0; i < d.rows.n; i++) {
            const char *f[5];
            static const char *const gpqa[] = {"Question", "Correct Answer", "Incorrect Answer 1",
                                               "Incorrect Answer 2", "Incorrect Answer 3"};
            if (task == DMS_EVAL_GPQA) {
                for (int k = 0; k < 5; k++) {
                    f[k] = dms_eval_row_str(&d.rows, i, path, gpqa[k], &err);
                    fuzz_require(f[k] != NULL, "a checked gpqa row has every field");
                }
                int order[4];
                const int letter = dms_eval_shuffle_choices(c.seed, i, 4, order);
                fuzz_require(letter >= 'A' && letter <= 'D', "the correct letter");
                const char *ch[4];
                for (int k = 0; k < 4; k++) ch[k] = f[1 + order[k]];
                free(dms_eval_mc_prompt(f[0], ch, 4));
            } else {
                const char *a = dms_eval_row_str(&d.rows, i, path, "answer", &err);
                long long v;
                fuzz_require(a && dms_eval_parse_int(a, &v) == 0, "a checked aime row has an integer answer");
            }
        }
    }
    dms_eval_data_free(&d);
}

static void item_log(const uint8_t *data, size_t size) {
    char path[PATH_MAX];
    fuzz_write_file("log/items.jsonl", data, size, path, sizeof path);
    dms_eval_log lg;
    dms_err err = {{0}};
    int rc = dms_eval_log_open(&lg, path, "fp-0123", &err);
    fuzz_check_err(rc, &err, path, "dms_eval_log_open");
    if (rc) return;
    dms_eval_log_has(&lg, "0");
    for (int task = DMS_EVAL_KL; task <= DMS_EVAL_GPQA; task++) {
        cJSON *result = cJSON_CreateObject();
        if (!result) abort();
        dms_err e2 = {{0}};
        rc = dms_eval_aggregate((dms_eval_task)task, lg.rows.rows, lg.rows.n, result, &e2);
        fuzz_check_err(rc, &e2, NULL, "dms_eval_aggregate");
        char *s = cJSON_PrintUnformatted(result);
        free(s);
        cJSON_Delete(result);
    }
    dms_eval_log_close(&lg);
}

static void results_folder(const uint8_t *data, size_t size) {
    fuzz_part p[3];
    const int np = fuzz_split(data, size, p, 3);
    char path[PATH_MAX], dir[PATH_MAX];
    for (int i = 0; i < 3; i++) {
        char name[64];
        fuzz_fmt(name, sizeof name, "res/r%d.json", i);
        if (i < np) fuzz_write_file(name, p[i].data, p[i].size, path, sizeof path);
        else fuzz_remove_file(name);
    }
    fuzz_fmt(dir, sizeof dir, "%s/res", fuzz_tmpdir());
    cJSON **docs = NULL;
    int n = 0;
    dms_err err = {{0}};
    int rc = dms_eval_list_results(dir, &docs, &n, &err);
    fuzz_check_err(rc, &err, dir, "dms_eval_list_results");
    if (rc == 0) dms_eval_free_results(docs, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const uint8_t *rest = data + 1;
    const size_t n = size - 1;
    switch (data[0] % 6) {
    case 0: data_file(DMS_EVAL_AIME, "aime.jsonl", rest, n); break;
    case 1: data_file(DMS_EVAL_GPQA, "gpqa.jsonl", rest, n); break;
    case 2: data_file(DMS_EVAL_KL, "kl.jsonl", rest, n); break;
    case 3: data_file(DMS_EVAL_KL, "kl.txt", rest, n); break;
    case 4: item_log(rest, n); break;
    default: results_folder(rest, n); break;
    }
    return 0;
}
