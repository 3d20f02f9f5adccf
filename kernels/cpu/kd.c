/* kd.c - distillation on a chunk of LM-head rows: KL(student || teacher)
 * (NVIDIA's) or KL(teacher || student) per row and its gradient w.r.t. the
 * student logits, in double. */
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

/* log-sum-exp of a row, max-shifted, double accumulation */
static double row_lse(const float *z, int V) {
    float mx = -INFINITY;
    for (int v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
    double s = 0.0;
    for (int v = 0; v < V; v++) s += exp((double)z[v] - mx);
    return mx + log(s);
}

/* loss and dzs may be NULL (skipped); weight NULL means 1. forward 0:
 * KL(s||t), gradient p_s ((log p_s - log p_t) - KL); forward 1: KL(t||s),
 * gradient p_s - p_t. */
void dms_cpu_kd_chunk(void *ctx, float *loss, float *dzs, const float *zs, const float *zt,
                      const float *weight, int rows, int V, int forward) {
    (void)ctx;
#pragma omp parallel for schedule(dynamic)
    for (int r = 0; r < rows; r++) {
        const float *s = zs + (size_t)r * V, *t = zt + (size_t)r * V;
        const double ls = row_lse(s, V), lt = row_lse(t, V);
        double kl = 0.0;
        for (int v = 0; v < V; v++) {
            const double lps = s[v] - ls, lpt = t[v] - lt;
            kl += forward ? exp(lpt) * (lpt - lps) : exp(lps) * (lps - lpt);
        }
        if (loss) loss[r] = (float)kl;
        if (dzs) {
            const double wr = weight ? weight[r] : 1.0;
            float *g = dzs + (size_t)r * V;
            for (int v = 0; v < V; v++) { /* reads s[v] before writing g[v]: aliasing is fine */
                const double lps = s[v] - ls, lpt = t[v] - lt;
                g[v] = (float)(wr * (forward ? exp(lps) - exp(lpt) : exp(lps) * ((lps - lpt) - kl)));
            }
        }
    }
}
