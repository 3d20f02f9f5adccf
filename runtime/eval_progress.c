/* eval_progress.c - what an evaluation tells its user while it runs
 * (eval.h): items done of the total (resumed items counted as done),
 * tokens/s of this process and the ETA, on one stderr line redrawn in place
 * on a terminal, or one line per finished item when stderr is a file. */
#include "runtime/eval.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

#include "train/progress.h"

void dms_eval_fmt_duration(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) s = 0;
    const int h = (int)(s / 3600), m = (int)(fmod(s, 3600) / 60), sec = (int)fmod(s, 60);
    if (h) snprintf(buf, n, "%dh%02dm", h, m);
    else snprintf(buf, n, "%dm%02ds", m, sec);
}

void dms_eval_progress_init(dms_eval_progress *p, const char *label, int total, int skipped, int quiet) {
    memset(p, 0, sizeof *p);
    snprintf(p->label, sizeof p->label, "%s", label);
    p->total = total;
    p->skipped = skipped;
    p->quiet = quiet;
    p->tty = isatty(2);
    p->t0 = dms_now_s();
}

static void draw(dms_eval_progress *p, int newline) {
    const double now = dms_now_s(), el = now - p->t0;
    const int done = p->skipped + p->done, left = p->total - done;
    const double eta = p->done > 0 ? el / p->done * left : NAN;
    char eta_s[32] = "?", el_s[32];
    if (isfinite(eta)) dms_eval_fmt_duration(eta_s, sizeof eta_s, eta);
    dms_eval_fmt_duration(el_s, sizeof el_s, el);
    const int width = 20, fill = p->total > 0 ? (int)((double)done / p->total * width) : width;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    bar[width] = '\0';
    fprintf(stderr, "%s[%s] %d/%d items [%s] %.1f tok/s, %s elapsed, ETA %s%s", p->tty ? "\r\033[K" : "",
            p->label, done, p->total, bar, el > 0 ? p->tokens / el : 0.0, el_s, eta_s, newline ? "\n" : "");
    fflush(stderr);
    p->last_draw = now;
}

void dms_eval_progress_tokens(dms_eval_progress *p, double n) {
    if (!p) return;
    p->tokens += n;
    if (!p->quiet && p->tty && dms_now_s() - p->last_draw >= 0.5) draw(p, 0);
}

void dms_eval_progress_item(dms_eval_progress *p) {
    if (!p) return;
    p->done++;
    if (!p->quiet) draw(p, !p->tty);
}

void dms_eval_progress_end(dms_eval_progress *p) {
    if (!p || p->quiet) return;
    if (p->tty) {
        draw(p, 1);
    }
}
