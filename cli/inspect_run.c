/* inspect_run.c - `dms inspect RUN`: read a training run's metrics.jsonl
 * and plot KD and compression loss, target vs actual compression ratio, and
 * the per-layer CR over training to PNG files with gnuplot; print a short
 * summary. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "core/fs.h"
#include "core/mapped_file.h"

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

int dms_inspect_run(const char *dir) {
    char path[PATH_MAX], dat[PATH_MAX], layers_dat[PATH_MAX];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    dms_err err = {0};
    char *text = dms_read_text_file(path, NULL, &err);
    if (!text) {
        fprintf(stderr, "dms inspect: %s\n", err.msg);
        return 1;
    }
    snprintf(dat, sizeof dat, "%s/plots/metrics.dat", dir);
    snprintf(layers_dat, sizeof layers_dat, "%s/plots/layer_kv_cr.dat", dir);
    char plots[PATH_MAX];
    snprintf(plots, sizeof plots, "%s/plots", dir);
    if (dms_mkdir_p(plots, &err) != 0) {
        fprintf(stderr, "dms inspect: %s\n", err.msg);
        free(text);
        return 1;
    }
    FILE *fd = fopen(dat, "w"), *fl = fopen(layers_dat, "w");
    if (!fd || !fl) {
        fprintf(stderr, "dms inspect: %s: cannot write plot data\n", plots);
        if (fd) fclose(fd);
        if (fl) fclose(fl);
        free(text);
        return 1;
    }
    int n = 0, n_layers = 0, line_no = 0, rc = 0;
    double last_kd = NAN, last_comp = NAN, last_cr = NAN, last_kv = NAN, last_target = NAN, tok_s = NAN;
    int last_step = -1, skipped = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        line_no++;
        cJSON *o = cJSON_Parse(line);
        if (!cJSON_IsObject(o)) {
            fprintf(stderr, "dms inspect: %s:%d: not a JSON object\n", path, line_no);
            cJSON_Delete(o);
            rc = 1;
            break;
        }
        const int step = (int)num(o, "step");
        /* runs written before the KV CR was logged call the decision CR actual_cr */
        const int old = !cJSON_GetObjectItemCaseSensitive(o, "decision_cr");
        const double dcr = num(o, old ? "actual_cr" : "decision_cr"), kvcr = old ? NAN : num(o, "kv_cr");
        fprintf(fd, "%d %.9g %.9g %.9g %.9g %.9g %.9g\n", step, num(o, "kd"), num(o, "compression"),
                num(o, "target_cr"), dcr, num(o, "loss"), kvcr);
        const cJSON *lc = cJSON_GetObjectItemCaseSensitive(o, old ? "layer_cr" : "layer_kv_cr");
        int l = 0;
        for (const cJSON *e = lc ? lc->child : NULL; e; e = e->next, l++)
            fprintf(fl, "%d %d %.6g\n", step, l, cJSON_IsNumber(e) && isfinite(e->valuedouble) ? e->valuedouble : 0.0);
        fprintf(fl, "\n");
        if (l > n_layers) n_layers = l;
        last_step = step;
        last_kd = num(o, "kd");
        last_comp = num(o, "compression");
        last_cr = dcr;
        last_kv = kvcr;
        last_target = num(o, "target_cr");
        tok_s = num(o, "tok_s");
        skipped += cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "skipped"));
        n++;
        cJSON_Delete(o);
    }
    fclose(fd);
    fclose(fl);
    free(text);
    if (rc) return rc;
    if (n == 0) {
        fprintf(stderr, "dms inspect: %s: no steps recorded yet\n", path);
        return 1;
    }
    printf("run:           %s\nsteps logged:  %d (last step %d, %d skipped as non-finite)\n", dir, n, last_step + 1,
           skipped);
    printf("last step:     kd %.5f  compression %.4f  KV CR %.2f  decision CR %.2f (target %.2f)  %.0f tok/s\n",
           last_kd, last_comp, last_kv, last_cr, last_target, tok_s);

    FILE *gp = popen("gnuplot 2>&1", "w");
    if (!gp) {
        fprintf(stderr, "dms inspect: cannot run gnuplot (Debian: gnuplot-nox)\n");
        return 1;
    }
    fprintf(gp,
            "set terminal pngcairo size 900,500 font ',10'\nset grid\nset key top right\nset xlabel 'step'\n"
            "set output '%s/loss.png'\nset title 'DMS retrofit: losses'\nset logscale y\nset ylabel 'KD (log)'\n"
            "set y2label 'compression'\nset y2tics\nset ytics nomirror\n"
            "plot '%s' using ($1+1):2 with lines lw 2 title 'KD (KL student||teacher)', "
            "'' using ($1+1):3 axes x1y2 with lines lw 2 title 'compression'\n"
            "unset logscale y\nunset y2tics\nunset y2label\nset ytics mirror\n"
            "set output '%s/cr.png'\nset title 'compression ratio on the training rows'\nset ylabel 'CR'\n"
            "plot '%s' using ($1+1):4 with lines lw 2 title 'target (decision CR)', "
            "'' using ($1+1):5 with lines lw 2 title 'decision CR: 1/(1-flagged)', "
            "'' using ($1+1):7 with lines lw 2 title 'KV CR: tokens / tokens held'\n",
            plots, dat, plots, dat);
    if (n_layers > 0)
        fprintf(gp,
                "set output '%s/layer_kv_cr.png'\nset title 'per-layer KV CR on the training rows'\nset ylabel 'layer'\n"
                "set cblabel 'CR'\nset view map\nset autoscale xfix\nset yrange [-0.5:%d.5]\n"
                "plot '%s' using ($1+1):2:3 with image title ''\n",
                plots, n_layers - 1, layers_dat);
    int prc = pclose(gp);
    if (prc != 0) {
        fprintf(stderr, "dms inspect: gnuplot failed (exit %d) writing plots in %s\n", prc, plots);
        return 1;
    }
    printf("plots:         %s/loss.png %s/cr.png%s%s/layer_kv_cr.png\n", plots, plots, n_layers ? " " : "",
           n_layers ? plots : "");
    return 0;
}
