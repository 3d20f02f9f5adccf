/* progress.h - what a training run tells its user: a one-line progress bar
 * on stderr (step, KD, compression, target and actual CR, tok/s, ETA),
 * redrawn in place on a terminal and printed every log_every steps
 * otherwise, and one JSON line per step in RUN/metrics.jsonl that
 * `dms inspect RUN` plots. */
#ifndef DMS_PROGRESS_H
#define DMS_PROGRESS_H

#include <stdio.h>

#include "core/err.h"
#include "train/trainer.h"

typedef struct dms_progress {
    FILE *metrics;       /* RUN/metrics.jsonl, appended */
    int tty;             /* stderr is a terminal */
    int total_steps, log_every, n_layers;
    double t_start;      /* wall time at the first step of this process */
    int first_step;
    double tokens_done;  /* by this process */
} dms_progress;

int dms_progress_open(dms_progress *p, const char *run_dir, int total_steps, int first_step,
                      int log_every, int n_layers, dms_err *err);
/* Records one step (skipped: a non-finite step that did not update). */
int dms_progress_step(dms_progress *p, int step, const dms_step_stats *st, double lr, double tokens,
                      int skipped, dms_err *err);
void dms_progress_close(dms_progress *p);
double dms_now_s(void);

#endif
