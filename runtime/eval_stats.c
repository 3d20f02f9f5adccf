/* eval_stats.c - the numbers an evaluation reports beside its metric
 * (eval.h): a mean with its standard error, and the budget-matching rule
 * that gives a fixed-budget baseline the memory a DMS run really held. A
 * fixed budget B over a window of T tokens holds min(t, B) tokens after
 * token t, so its time average is mean_{t=1..T} min(t, B)
 * = B(2T - B + 1) / 2T for B <= T; matching inverts that quadratic. */
#include "runtime/eval.h"

#include <math.h>

void dms_eval_mean_se(const double *x, int n, double *mean, double *se) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    const double m = n > 0 ? s / n : 0;
    double v = 0;
    for (int i = 0; i < n; i++) v += (x[i] - m) * (x[i] - m);
    *mean = m;
    *se = n > 1 ? sqrt(v / (n - 1) / n) : 0;
}

double dms_eval_budget_held(double b, int T) {
    if (T < 1 || b <= 0) return 0;
    if (b >= T) return (T + 1) / 2.0;
    return b * (2.0 * T - b + 1.0) / (2.0 * T);
}

int dms_eval_match_budget(double held, int T, double *b_real) {
    if (T < 1 || !(held > 0)) return -1;
    if (held >= (T + 1) / 2.0) {
        if (b_real) *b_real = T;
        return T;
    }
    /* B^2 - (2T + 1) B + 2 T held = 0, the root below T */
    const double a = 2.0 * T + 1.0, disc = a * a - 8.0 * T * held;
    const double b = (a - sqrt(disc > 0 ? disc : 0)) / 2.0;
    if (b_real) *b_real = b;
    int lo = (int)floor(b), hi = lo + 1;
    if (lo < 1) lo = 1;
    if (hi > T) hi = T;
    if (hi < lo) hi = lo;
    return fabs(dms_eval_budget_held(lo, T) - held) <= fabs(dms_eval_budget_held(hi, T) - held) ? lo : hi;
}
