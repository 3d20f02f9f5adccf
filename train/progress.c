/* progress.c - progress bar and metrics.jsonl (progress.h). */
#include "train/progress.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double dms_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int dms_progress_open(dms_progress *p, const char *run_dir, int total_steps, int first_step, int log_every,
                      int n_layers, dms_err *err) {
    memset(p, 0, sizeof *p);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    p->metrics = fopen(path, "a");
    if (!p->metrics) return dms_errf(err, "%s: cannot open for writing", path);
    p->tty = isatty(2);
    p->total_steps = total_steps;
    p->first_step = first_step;
    p->log_every = log_every > 0 ? log_every : 1;
    p->n_layers = n_layers;
    p->t_start = dms_now_s();
    return 0;
}

static void fmt_eta(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) s = 0;
    int h = (int)(s / 3600), m = (int)(fmod(s, 3600) / 60), sec = (int)fmod(s, 60);
    if (h) snprintf(buf, n, "%dh%02dm", h, m);
    else snprintf(buf, n, "%dm%02ds", m, sec);
}

/* The CR of a fraction `frac` of tokens dropped (decision CR from the
 * flagged fraction, KV CR from the fraction really dropped). */
static double cr_of(double frac) { return frac < 1 ? 1.0 / (1.0 - frac) : INFINITY; }

int dms_progress_step(dms_progress *p, int step, const dms_step_stats *st, double lr, double tokens, int skipped,
                      dms_err *err) {
    p->tokens_done += tokens;
    const double elapsed = dms_now_s() - p->t_start;
    const int done = step + 1 - p->first_step;
    const double tok_s = elapsed > 0 ? p->tokens_done / elapsed : 0;
    const double eta = done > 0 ? elapsed / done * (p->total_steps - step - 1) : 0;

    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "step", step);
    cJSON_AddNumberToObject(o, "loss", st->loss);
    cJSON_AddNumberToObject(o, "kd", st->kd);
    cJSON_AddNumberToObject(o, "compression", st->comp);
    if (st->guide != 0) cJSON_AddNumberToObject(o, "guide", st->guide);
    cJSON_AddNumberToObject(o, "target_cr", st->target < 1 ? 1.0 / (1.0 - st->target) : 0);
    cJSON_AddNumberToObject(o, "decision_cr", cr_of(st->frac));
    cJSON_AddNumberToObject(o, "kv_cr", cr_of(st->kv_frac));
    cJSON_AddNumberToObject(o, "flagged_frac", st->frac);
    cJSON *layers = cJSON_AddArrayToObject(o, "layer_decision_cr");
    for (int l = 0; l < p->n_layers; l++) cJSON_AddItemToArray(layers, cJSON_CreateNumber(cr_of(st->frac_layer[l])));
    layers = cJSON_AddArrayToObject(o, "layer_kv_cr");
    for (int l = 0; l < p->n_layers; l++) cJSON_AddItemToArray(layers, cJSON_CreateNumber(cr_of(st->kv_frac_layer[l])));
    cJSON_AddNumberToObject(o, "heads_all", st->heads_all);
    cJSON_AddNumberToObject(o, "heads_none", st->heads_none);
    cJSON_AddNumberToObject(o, "lr", lr);
    cJSON_AddNumberToObject(o, "grad_norm", st->grad_norm);
    cJSON_AddNumberToObject(o, "tokens", tokens);
    cJSON_AddNumberToObject(o, "tok_s", tok_s);
    cJSON_AddNumberToObject(o, "elapsed_s", elapsed);
    cJSON_AddBoolToObject(o, "skipped", skipped);
    char *line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    int rc = fprintf(p->metrics, "%s\n", line) < 0 || fflush(p->metrics) != 0 ? -1 : 0;
    free(line);
    if (rc) return dms_errf(err, "metrics.jsonl: write failed");

    if (p->tty || (step + 1) % p->log_every == 0 || step + 1 == p->total_steps || skipped) {
        char eta_s[32];
        fmt_eta(eta_s, sizeof eta_s, eta);
        const int width = 20, fill = p->total_steps ? (int)((double)(step + 1) / p->total_steps * width) : width;
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
        bar[width] = '\0';
        fprintf(stderr, "%sstep %d/%d [%s] kd %.4f comp %.3f KV CR %.2f decision CR %.2f/%.2f tok/s %.0f ETA %s%s%s",
                p->tty ? "\r\033[K" : "", step + 1, p->total_steps, bar, st->kd, st->comp, cr_of(st->kv_frac),
                cr_of(st->frac),
                st->target < 1 ? 1.0 / (1.0 - st->target) : 0.0, tok_s, eta_s, skipped ? " (skipped: non-finite)" : "",
                p->tty ? "" : "\n");
        if (p->tty && (step + 1 == p->total_steps || skipped)) fputc('\n', stderr);
        fflush(stderr);
    }
    return 0;
}

void dms_progress_close(dms_progress *p) {
    if (p->metrics) fclose(p->metrics);
    p->metrics = NULL;
}
