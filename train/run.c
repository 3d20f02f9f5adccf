/* run.c - a whole training run (run.h): model and shards in, the step loop
 * with its deterministic global sample order, non-finite step handling,
 * metrics and progress, atomic checkpoints every save_every steps, and
 * bit-exact resume from the newest checkpoint. */
#include "train/run.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fault_point.h"
#include "core/fs.h"
#include "data/shards.h"
#include "kernels/dms_rng.h"
#include "train/checkpoint.h"
#include "train/run_testing.h"
#include "train/progress.h"
#include "train/trainer.h"

#ifndef DMS_GIT_REV
#define DMS_GIT_REV "unknown"
#endif

/* Global sample order: epoch e visits every row once in a permutation
 * seeded by (seed, e); sample s of the run is row perm_e[s mod n]. */
typedef struct {
    int64_t n_rows, epoch;
    int64_t *perm;
    uint64_t seed;
} sample_order;

static int64_t order_row(sample_order *o, int64_t sample) {
    const int64_t e = sample / o->n_rows;
    if (!o->perm || e != o->epoch) {
        if (!o->perm) o->perm = malloc(sizeof(int64_t) * (size_t)o->n_rows);
        for (int64_t i = 0; i < o->n_rows; i++) o->perm[i] = i;
        for (int64_t i = o->n_rows - 1; i > 0; i--) { /* Fisher-Yates */
            uint64_t h = dms_rng_key(o->seed, (uint64_t)e, 0x5a3e, 0, (uint64_t)i);
            int64_t j = (int64_t)(h % (uint64_t)(i + 1));
            int64_t t = o->perm[i];
            o->perm[i] = o->perm[j];
            o->perm[j] = t;
        }
        o->epoch = e;
    }
    return o->perm[sample % o->n_rows];
}

/* Test seam (train/run_testing.h): a test binary links a strong
 * definition that marks chosen steps non-finite, to exercise the
 * skip-and-stop logic without a broken model. Never true in `dms`. */
__attribute__((weak)) int dms_test_fault_nonfinite(int step) {
    (void)step;
    return 0;
}

static int save_checkpoint(dms_trainer *tr, const dms_train_config *cfg, const char *config_json, int next_step,
                           int64_t samples_seen, dms_err *err) {
    const dms_backend *be = dms_trainer_backend(tr);
    dms_ckpt *ck = dms_ckpt_new();
    if (!ck) return dms_errf(err, "checkpoint: out of memory");
    char name[256];
    for (int i = 0; i < dms_trainer_n_params(tr); i++) {
        dms_param *p = dms_trainer_param(tr, i);
        int64_t shape[2] = {p->rows, p->cols};
        const int nd = p->cols ? 2 : 1;
        float *bufs[3] = {p->p, p->m, p->v};
        const char *groups[3] = {"params", "adam_m", "adam_v"};
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof name, "%s/%s", groups[k], p->name);
            float *host = malloc(sizeof(float) * p->n);
            if (!host) {
                dms_ckpt_free(ck);
                return dms_errf(err, "checkpoint: out of memory");
            }
            dms_download_f32(be, host, bufs[k], p->n);
            dms_ckpt_add_tensor(ck, name, host, nd, shape); /* copies */
            free(host);
        }
    }
    dms_ckpt_add_i64(ck, "step", next_step);
    dms_ckpt_add_i64(ck, "seed", (int64_t)cfg->seed);
    dms_ckpt_add_i64(ck, "samples_seen", samples_seen);
    dms_ckpt_add_str(ck, "config", config_json);
    dms_ckpt_add_str(ck, "git_revision", DMS_GIT_REV);
    int rc = dms_ckpt_save(cfg->output, next_step, ck, cfg->keep_last, err);
    dms_ckpt_free(ck);
    return rc;
}

/* After a failed save (disk full, I/O error): adds the checkpoint that is
 * kept, untouched, to the message. Returns -1. */
static int name_kept_checkpoint(const char *dir, dms_err *err) {
    char path[PATH_MAX], msg[sizeof err->msg];
    dms_err e2;
    if (dms_ckpt_latest_before(dir, INT64_MAX, path, sizeof path, NULL, &e2) <= 0) snprintf(path, sizeof path, "none");
    snprintf(msg, sizeof msg, "%s", err->msg);
    return dms_errf(err, "%.700s; previous checkpoint kept: %.300s", msg, path);
}

/* Whether two resolved configs agree on every key that shapes the run; if
 * not, why names the keys that differ with both values. The lr schedule's
 * keys (and steps, which a decay spans) may change only where every one of
 * the `done` steps already taken keeps its learning rate bit for bit: then
 * the resumed run is a fresh run of the new config (a decay branched off a
 * constant run, warm-up / stable / decay). */
static int configs_compatible(const char *a_json, const dms_train_config *b, int64_t done, char *why,
                              size_t why_len) {
    dms_train_config a;
    dms_train_config_defaults(&a);
    dms_err e;
    if (dms_train_config_parse(&a, a_json, "checkpoint config", &e) != 0) {
        snprintf(why, why_len, "%.400s", e.msg);
        return 0;
    }
    dms_train_config x = a, y = *b;
    for (int64_t s = 0; s < done; s++) {
        const float la = dms_lr_at(&a, (int)s), lb = dms_lr_at(b, (int)s);
        if (memcmp(&la, &lb, sizeof la) != 0) {
            snprintf(why, why_len,
                     "the learning rate of step %lld, already taken, would change (checkpoint %.9g, config %.9g): "
                     "the lr schedule (lr, lr_schedule, warmup_steps, min_lr_ratio, decay_steps, steps) may "
                     "change only after the steps taken",
                     (long long)s, (double)la, (double)lb);
            return 0;
        }
    }
    /* blank out what may change */
    x.lr_schedule = y.lr_schedule; /* the lr of the steps taken is unchanged (above) */
    x.warmup_steps = y.warmup_steps;
    x.min_lr_ratio = y.min_lr_ratio;
    x.decay_steps = y.decay_steps;
    x.steps = y.steps;
    x.save_every = y.save_every;
    x.keep_last = y.keep_last;
    x.log_every = y.log_every;
    x.threads = y.threads;
    x.backend = y.backend; /* a run may continue on another backend */
    x.max_bad_steps = y.max_bad_steps;
    x.rank_timeout_s = y.rank_timeout_s;
    x.batch_size = y.batch_size; /* rows per rank: may change with the rank count */
    memcpy(x.output, y.output, sizeof x.output); /* a run folder may be moved or copied */
    char *ja = dms_train_config_to_json(&x), *jb = dms_train_config_to_json(&y);
    cJSON *oa = ja ? cJSON_Parse(ja) : NULL, *ob = jb ? cJSON_Parse(jb) : NULL;
    int same = ja && jb && strcmp(ja, jb) == 0;
    if (!same) {
        size_t n = (size_t)snprintf(why, why_len, "the config differs from the checkpoint's in");
        const cJSON *ka;
        int listed = 0;
        cJSON_ArrayForEach(ka, oa) {
            const cJSON *kb = cJSON_GetObjectItemCaseSensitive(ob, ka->string);
            char *va = cJSON_PrintUnformatted(ka), *vb = kb ? cJSON_PrintUnformatted(kb) : NULL;
            if (va && (!vb || strcmp(va, vb) != 0) && n < why_len)
                n += (size_t)snprintf(why + n, why_len - n, "%s %s (checkpoint %.80s, config %.80s)",
                                      listed++ ? "," : "", ka->string, va, vb ? vb : "unset");
            cJSON_free(va);
            cJSON_free(vb);
        }
        if (!listed && n < why_len) snprintf(why + n, why_len - n, " its settings");
        if (n < why_len)
            snprintf(why + strlen(why), why_len - strlen(why),
                     "; only steps, save_every, keep_last, log_every, threads, backend, max_bad_steps, "
                     "rank_timeout_s, batch_size, the lr schedule after the steps taken and output may change");
    }
    cJSON_Delete(oa);
    cJSON_Delete(ob);
    free(ja);
    free(jb);
    return same;
}

static int resume_from(dms_trainer *tr, const dms_train_config *cfg, int *start_step, int64_t *samples_seen,
                       int verbose, dms_err *err) {
    const dms_backend *be = dms_trainer_backend(tr);
    char path[PATH_MAX];
    int found = dms_ckpt_latest(cfg->output, path, sizeof path, err);
    if (found < 0) return -1;
    if (found == 0) return dms_errf(err, "%s: --resume given but no checkpoint in this folder", cfg->output);
    /* a corrupt or truncated newest checkpoint (checksum, HDF5 open) is
     * skipped with a warning for the one before it; none loadable: error */
    dms_ckpt *ck = NULL;
    char newest[PATH_MAX + 600] = "";
    int64_t at = INT64_MAX;
    found = dms_ckpt_latest_before(cfg->output, at, path, sizeof path, &at, err);
    while (found > 0) {
        if ((ck = dms_ckpt_load(path, err))) break;
        if (!newest[0]) snprintf(newest, sizeof newest, "%s", err->msg);
        if (verbose) fprintf(stderr, "[dms] warning: %s; trying the checkpoint before it\n", err->msg);
        found = dms_ckpt_latest_before(cfg->output, at, path, sizeof path, &at, err);
    }
    if (found < 0) return -1;
    if (!ck) return dms_errf(err, "%s: no loadable checkpoint (newest: %.900s)", cfg->output, newest);
    if (verbose && !dms_ckpt_verified(ck))
        fprintf(stderr, "[dms] note: %s has no checksums (written by an older dms): loaded unverified\n", path);
    int rc = 0;
    int64_t step = 0;
    char *stored = dms_ckpt_read_str(ck, "config", err);
    char why[512];
    if (!stored) rc = -1;
    if (rc == 0) rc = dms_ckpt_read_i64(ck, "step", &step, err);
    if (rc == 0 && !configs_compatible(stored, cfg, step, why, sizeof why))
        rc = dms_errf(err, "%s: cannot resume: %s", path, why);
    free(stored);
    if (rc == 0) rc = dms_ckpt_read_i64(ck, "samples_seen", samples_seen, err);
    char name[256];
    for (int i = 0; rc == 0 && i < dms_trainer_n_params(tr); i++) {
        dms_param *p = dms_trainer_param(tr, i);
        float *bufs[3] = {p->p, p->m, p->v};
        const char *groups[3] = {"params", "adam_m", "adam_v"};
        for (int k = 0; k < 3 && rc == 0; k++) {
            float *host = malloc(sizeof(float) * p->n);
            snprintf(name, sizeof name, "%s/%s", groups[k], p->name);
            rc = host ? dms_ckpt_read_tensor(ck, name, host, p->n, err) : dms_errf(err, "%s: out of memory", path);
            if (rc == 0) dms_upload_f32(be, bufs[k], host, p->n);
            free(host);
        }
    }
    dms_ckpt_free(ck);
    if (rc == 0) {
        *start_step = (int)step;
        if (verbose)
            fprintf(stderr, "[dms] resuming from %s at step %d (%lld samples seen)\n", path, *start_step,
                    (long long)*samples_seen);
    }
    return rc;
}

/* Rank 0 decides (rc), every rank learns it: keeps ranks in step when only
 * rank 0 touches the filesystem. */
static int agree(dms_comm *comm, int rc, dms_err *err) {
    double v = rc ? 1.0 : 0.0;
    dms_err e2;
    if (comm->size > 1) {
        if (comm->bcast(comm, &v, sizeof v, 0, &e2) != 0) return dms_errf(err, "%s", e2.msg);
        if (v != 0 && comm->rank != 0) return dms_errf(err, "rank 0 failed (see its message)");
    }
    return v != 0 ? -1 : 0;
}

int dms_train_run(const dms_train_config *cfg, const dms_backend *be, int resume, dms_comm *comm, dms_err *err) {
    int rc = 0, start_step = 0;
    const int steps = dms_train_steps(cfg); /* cr_schedule nvidia stops where the target reaches cr_final */
    const int lead = comm->rank == 0, B = cfg->batch_size, W = comm->size;
    int64_t samples_seen = 0;
    dms_model m;
    if (dms_model_load(&m, cfg->model, be, DMS_LOAD_WEIGHTS | DMS_LOAD_TOKENIZER, err) != 0) return -1;
    dms_dataset *ds = dms_dataset_open(cfg->data, dms_tokenizer_hash(m.tok), cfg->max_len, err);
    if (ds && dms_dataset_packing(ds) != cfg->packing) { /* rows are read as they were packed */
        dms_errf(err, "%s: packed with packing %s but the run uses packing %s (re-run dms prep --packing %s)",
                 cfg->data, dms_packing_name(dms_dataset_packing(ds)), dms_packing_name(cfg->packing),
                 dms_packing_name(cfg->packing));
        dms_dataset_close(ds);
        ds = NULL;
    }
    if (!ds) {
        dms_model_free(&m);
        return -1;
    }
    const int64_t n_rows = dms_dataset_n_rows(ds);
    dms_trainer *tr = NULL;
    char *config_json = dms_train_config_to_json(cfg);
    dms_progress prog = {0};
    uint32_t *tok_u = malloc(sizeof(uint32_t) * (size_t)cfg->max_len * B);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cfg->max_len * B);
    int32_t *seg = malloc(sizeof(int32_t) * (size_t)cfg->max_len * B);
    uint8_t *mask = malloc((size_t)cfg->max_len * B);
    dms_row *rows = calloc((size_t)B, sizeof(dms_row));
    sample_order order = {.n_rows = n_rows, .epoch = -1, .seed = cfg->seed};
    if (n_rows < 1) {
        rc = dms_errf(err, "%s: no complete row of %d tokens in the shards", cfg->data, cfg->max_len);
        goto done;
    }
    if (lead && dms_mkdir_p(cfg->output, err) != 0) rc = -1;
    if ((rc = agree(comm, rc, err)) != 0) goto done;
    tr = dms_trainer_create(&m, cfg, err);
    if (!tr) {
        rc = -1;
        goto done;
    }
    dms_trainer_overlap(tr, comm); /* several ranks: each layer's gradients summed during the backward */
    if (resume && resume_from(tr, cfg, &start_step, &samples_seen, lead, err) != 0) {
        rc = -1;
        goto done;
    }
    if (!resume && lead) { /* a fresh run must not silently mix with an old one */
        char path[PATH_MAX];
        int found = dms_ckpt_latest(cfg->output, path, sizeof path, err);
        if (found != 0)
            rc = found < 0 ? -1 : dms_errf(err, "%s: already holds checkpoints (%s); use --resume or another output",
                                           cfg->output, path);
    }
    if (lead && rc == 0) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/config.json", cfg->output);
        FILE *f = fopen(path, "w");
        if (!f || fputs(config_json, f) < 0 || fclose(f) != 0) rc = dms_errf(err, "%s: cannot write", path);
        if (rc == 0 && dms_progress_open(&prog, cfg->output, steps, start_step, cfg->log_every, m.cfg.n_layers,
                                         err) != 0)
            rc = -1;
    }
    if ((rc = agree(comm, rc, err)) != 0) goto done;
    if (lead)
        fprintf(stderr,
                "[dms] %s: %s %d layers, %d trainable tensors; %lld rows of %d tokens in %s; %d steps x %d rows x %d "
                "rank(s)\n",
                cfg->model, cfg->variant == DMS_VARIANT_ADAPTER ? "adapter" : "neuron", m.cfg.n_layers,
                dms_trainer_n_params(tr), (long long)n_rows, cfg->max_len, cfg->data, steps, B, W);
    int bad = 0, last_saved = resume ? start_step : -1;
    for (int step = start_step; step < steps; step++) {
        dms_fault_point("train_step", step); /* fault drills only (core/fault_point.h) */
        /* this rank's rows of the global batch, in the run's global sample order */
        double kd_tokens = 0;
        for (int b = 0; b < B; b++) {
            const int64_t sample = samples_seen + (int64_t)comm->rank * B + b;
            const int64_t row = order_row(&order, sample);
            uint32_t *tu = tok_u + (size_t)b * cfg->max_len;
            int32_t *ib = ids + (size_t)b * cfg->max_len;
            if (dms_dataset_row(ds, row, tu, seg + (size_t)b * cfg->max_len, mask + (size_t)b * cfg->max_len, err) != 0) {
                rc = -1;
                goto done;
            }
            for (int t = 0; t < cfg->max_len; t++) ib[t] = (int32_t)tu[t];
            rows[b] = (dms_row){ib, seg + (size_t)b * cfg->max_len, mask + (size_t)b * cfg->max_len,
                                sample * cfg->max_len, dms_dataset_row_pos0(ds, row)};
            kd_tokens += dms_trainer_row_kd_tokens(tr, &rows[b]);
        }
        samples_seen += (int64_t)B * W;
        if (comm->allreduce_f64(comm, &kd_tokens, 1, err) != 0) {
            rc = -1;
            goto done;
        }
        dms_step_stats st;
        if (dms_trainer_grads(tr, rows, B, step, kd_tokens, B * W, &st, err) != 0 ||
            dms_trainer_reduce(tr, comm, &st, err) != 0) {
            rc = -1;
            goto done;
        }
        if (dms_test_fault_nonfinite(step)) st.finite = 0, st.loss = NAN;
        const int skipped = !st.finite;
        if (skipped) {
            bad++;
        } else {
            bad = 0;
            dms_trainer_apply(tr, step, &st);
        }
        if (lead && dms_progress_step(&prog, step, &st, dms_lr_at(cfg, step), (double)B * W * cfg->max_len, skipped,
                                      err) != 0)
            rc = -1;
        if ((rc = agree(comm, rc, err)) != 0) goto done;
        if (bad >= cfg->max_bad_steps) {
            char path[PATH_MAX] = "none";
            if (dms_ckpt_latest(cfg->output, path, sizeof path, err) <= 0) snprintf(path, sizeof path, "none");
            rc = dms_errf(err, "%s: %d non-finite steps in a row (last at step %d); stopping; last good checkpoint: %s",
                          cfg->output, bad, step + 1, path);
            goto done;
        }
        if (!skipped && ((step + 1) % cfg->save_every == 0 || step + 1 == steps)) {
            if (lead && save_checkpoint(tr, cfg, config_json, step + 1, samples_seen, err) != 0)
                rc = name_kept_checkpoint(cfg->output, err);
            if ((rc = agree(comm, rc, err)) != 0) goto done;
            last_saved = step + 1;
        }
    }
    if (lead) fprintf(stderr, "[dms] done: %d steps; checkpoint at step %d in %s\n", steps, last_saved, cfg->output);
done:
    dms_progress_close(&prog);
    free(order.perm);
    free(rows);
    free(mask);
    free(seg);
    free(ids);
    free(tok_u);
    free(config_json);
    dms_trainer_free(tr);
    dms_dataset_close(ds);
    dms_model_free(&m);
    return rc;
}
